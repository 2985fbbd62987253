"""Attention rollout for vision transformers, in NumPy, from the attention artifact's answer
(`engine.Attention`): the maps a transformer's own attention draws, beside Grad-CAM's.

- `rollout` (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): each
  layer's head-mean attention with the residual path as identity, Â = (A + I) / 2 (rows sum
  to one), multiplied through the layers; class-agnostic.
- `gradient-rollout` (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability",
  their rule for self-attention): R = I, then R ← R + Ā·R per layer, Ā = E_h[relu(∇A ⊙ A)]
  (the artifact's `relevance`); class-specific.

Both end with R's rows weighted by the readout (which tokens the head reads, from its
gradient: the class token alone for a ViT, class and distillation tokens for DeiT, the
patches under global pooling), dropping the prefix tokens and folding the patches into the
grid, as Grad-CAM's target is folded.
"""

from __future__ import annotations

import numpy as np

from dermcam.cam import normalise
from dermcam.engine import Attention

ROLLOUTS = {"rollout": "Attention rollout", "gradient-rollout": "Gradient-weighted rollout"}


def attention_rollout(attention: np.ndarray) -> np.ndarray:
    """Abnar & Zuidema's rollout of [L, N, N] head-mean attentions → [N, N]."""
    n = attention.shape[-1]
    rolled = np.eye(n)
    for layer in attention.astype(np.float64):
        mixed = 0.5 * layer + 0.5 * np.eye(n)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        rolled = mixed @ rolled
    return rolled


def gradient_rollout(relevance: np.ndarray) -> np.ndarray:
    """Chefer et al.'s relevance of [L, N, N] Ā = E_h[relu(∇A ⊙ A)] → [N, N]."""
    n = relevance.shape[-1]
    rolled = np.eye(n)
    for layer in relevance.astype(np.float64):
        rolled = rolled + layer @ rolled
    return rolled


def read_out(rolled: np.ndarray, readout: np.ndarray, prefix: int, grid: tuple[int, int]):  # noqa: ANN201
    """The rows of `rolled` the head reads, weighted by `readout`, at the patch tokens, as
    the [h, w] grid (not normalised)."""
    weights = readout.astype(np.float64)
    total = weights.sum()
    if total <= 0 or not np.isfinite(total):  # no gradient reached the tokens: the class token
        weights = np.zeros_like(weights)
        weights[0] = 1.0
        total = 1.0
    relevance = (weights / total) @ rolled
    return relevance[prefix:].reshape(grid)


def rollout_map(method: str, answer: Attention, prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """The method's map [h, w], scaled to 0–1 (float32)."""
    if method == "rollout":
        rolled = attention_rollout(answer.attention)
    elif method == "gradient-rollout":
        rolled = gradient_rollout(answer.relevance)
    else:
        raise ValueError(f"unknown rollout {method!r}; use one of: {', '.join(ROLLOUTS)}")
    return normalise(np.maximum(read_out(rolled, answer.readout, prefix, grid), 0.0))
