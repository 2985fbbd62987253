"""Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (Chefer et al.
2021) of a PyTorch vision transformer, computed in torch from the model's own attention
probabilities and their gradients, as the papers' code takes them (timm's attention with
`fused_attn` off, its `attn_drop` input; a Hugging Face ViT's `output_attentions`): the
reference `make test` holds dermcam's served rollout maps to, without torch. Runs in
`.venv-torch`."""

from __future__ import annotations

import contextlib

import numpy as np


def _timm_attention(model):  # noqa: ANN001, ANN202 - timm ViT / DeiT
    """Forward hooks keeping every block's attention probabilities (gradients retained)."""
    kept: list = []
    hooks = []
    for block in model.blocks:
        block.attn.fused_attn = False  # the explicit softmax: its probabilities can be held

        def keep(module, inputs, output):  # noqa: ANN001, ANN202
            output.retain_grad()
            kept.append(output)

        hooks.append(block.attn.attn_drop.register_forward_hook(keep))
    return kept, hooks


@contextlib.contextmanager
def _final_tokens(module):  # noqa: ANN001, ANN202
    """The tokens the head reads from (the final normalisation's output), gradient kept."""
    kept: list = []

    def keep(m, inputs, output):  # noqa: ANN001, ANN202
        output.retain_grad()
        kept.append(output)

    hook = module.register_forward_hook(keep)
    try:
        yield kept
    finally:
        hook.remove()


def attention_and_relevance(model, x, klass: int):  # noqa: ANN001, ANN201
    """[L, N, N] head-mean attention, [L, N, N] E_h[relu(∇A ⊙ A)] and the readout [N]
    (|d logit / d final tokens| summed over channels) for one image `x` [1, 3, H, W]."""
    if hasattr(model, "blocks"):  # timm
        attentions, hooks = _timm_attention(model)
        final = model.norm
        run = model
    else:  # the Hugging Face wrapper (torch_specimens._huggingface_vit)
        hf = model.model
        hf.set_attn_implementation("eager")
        hooks, attentions = [], []
        final = hf.vit.layernorm

        def run(x):  # noqa: ANN001, ANN202
            out = hf(pixel_values=x, output_attentions=True)
            for a in out.attentions:
                a.retain_grad()
                attentions.append(a)
            return out.logits

    try:
        with _final_tokens(final) as tokens:
            logits = run(x)
            model.zero_grad()
            logits[0, klass].backward()
    finally:
        for hook in hooks:
            hook.remove()
    attention = np.stack([a[0].detach().mean(0).numpy() for a in attentions])
    relevance = np.stack(
        [(a.grad[0] * a[0]).clamp(min=0).mean(0).detach().numpy() for a in attentions]
    )
    readout = tokens[0].grad[0].abs().sum(-1).numpy()
    return attention, relevance, readout


def rollout_maps(model, x, klass: int, prefix: int, grid: tuple[int, int]) -> dict:  # noqa: ANN001
    """Both rollouts of one image at the patch grid (not normalised)."""
    attention, relevance, readout = attention_and_relevance(model, x, klass)
    n = attention.shape[-1]
    eye = np.eye(n)
    rolled, chefer = eye.copy(), eye.copy()
    for a, r in zip(attention.astype(np.float64), relevance.astype(np.float64), strict=True):
        mixed = (a + eye) / 2.0
        rolled = (mixed / mixed.sum(-1, keepdims=True)) @ rolled
        chefer = chefer + r @ chefer
    weights = readout / readout.sum()
    return {
        "rollout": (weights @ rolled)[prefix:].reshape(grid),
        "gradient_rollout": (weights @ chefer)[prefix:].reshape(grid),
    }
