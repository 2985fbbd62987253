"""PyTorch models as their users export them (`torch.onnx.export`, NCHW, opset 17, a dynamic
batch), random weights and a 7-class head; and pytorch-grad-cam's own Grad-CAM of them, the
field's reference. Runs in `.venv-torch` (torch, torchvision, timm, grad-cam; no TensorFlow):

    python -m model_store.demos.torch_specimens fixtures --out tests/fixtures/onnx
    python -m model_store.demos.torch_specimens family NAME --out FILE.onnx
    python -m model_store.demos.torch_specimens reference NAME --weights FILE.pt --job JOB.npz

`fixtures`: narrow versions of the families (a few MB in all), committed, so that `make test`
exports and serves PyTorch models without torch; beside each transformer, pytorch-grad-cam's
maps of four isic-uda1 photographs (`.npz`), and both attention rollouts computed in torch
(`torch_rollout`; not for Swin, whose attention is windowed). `family`: one full-size family for
`make zoo-onnx` (its weights kept beside, so the reference runs the very same network).
`reference`: pytorch-grad-cam's GradCAM on that network for the images and classes of a job
file, at the module whose output is the target tensor dermcam chose (found by its values).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

CLASSES = 7
SEED = 7


def _timm(name: str, **kwargs) -> Callable:
    def build():  # noqa: ANN202
        import timm

        return timm.create_model(name, pretrained=False, num_classes=CLASSES, **kwargs)

    return build


def _torchvision(name: str, **kwargs) -> Callable:
    def build():  # noqa: ANN202
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=CLASSES, **kwargs)

    return build


def _huggingface_vit(**config):  # noqa: ANN003
    """Hugging Face `ViTForImageClassification` from a config (no download), returning its
    logits as a tensor: what `torch.onnx.export` and pytorch-grad-cam both need (the
    latter's own tutorial wraps it the same way)."""

    def build():  # noqa: ANN202
        import torch
        from transformers import ViTConfig, ViTForImageClassification

        class Logits(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = ViTForImageClassification(ViTConfig(num_labels=CLASSES, **config))

            def forward(self, x):  # noqa: ANN001, ANN202
                return self.model(pixel_values=x).logits

        return Logits()

    return build


def _narrow_resnet():  # noqa: ANN202
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), num_classes=CLASSES)


def _narrow_efficientnet():  # noqa: ANN202
    from timm.models import efficientnet

    return efficientnet._gen_efficientnet(
        "efficientnet_b0", channel_multiplier=0.25, depth_multiplier=0.34, num_classes=CLASSES
    )


def _narrow_densenet():  # noqa: ANN202
    from timm.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_classes=CLASSES)


def _spread(builder: Callable) -> Callable:
    """Random transformer weights at a trained network's scale. timm's and Hugging Face's
    initialisation (std 0.02) leaves every token nearly alike and attention uniform, and then
    pytorch-grad-cam's maps of a narrow network are flat or zero for most photographs:
    position embeddings and special tokens get std 1, weights 1/sqrt(fan-in)."""

    def build():  # noqa: ANN202
        import torch

        model = builder()
        generator = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "token" in name or "pos" in name.rsplit(".", 1)[-1] or "position" in name:
                    p.copy_(torch.randn(p.shape, generator=generator))
                elif p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)
        return model

    return build


def _narrow_vit(**kwargs):  # noqa: ANN003, ANN202
    def build():  # noqa: ANN202
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
            num_classes=CLASSES, **kwargs,
        )  # fmt: skip

    return build


def _narrow_deit():  # noqa: ANN202
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(
        img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2,
        num_classes=CLASSES,
    )  # fmt: skip


def _narrow_swin():  # noqa: ANN202
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        img_size=64, patch_size=4, window_size=8, embed_dim=24, depths=(1, 1),
        num_heads=(2, 4), num_classes=CLASSES,
    )  # fmt: skip


# name → (builder, input size): committed for make test, narrow so they stay small.
FIXTURES = {
    "resnet-narrow": (_narrow_resnet, 64),
    "efficientnet-narrow": (_narrow_efficientnet, 64),
    "mobilenetv3-narrow": (_torchvision("mobilenet_v3_large", width_mult=0.25), 64),
    "densenet-narrow": (_narrow_densenet, 64),
    # transformers, each with pytorch-grad-cam's maps of real photographs beside it (.npz)
    "vit-narrow": (_spread(_narrow_vit()), 64),
    "deit-narrow": (_spread(_narrow_deit), 64),
    "vit-reg4-narrow": (_spread(_narrow_vit(reg_tokens=4, global_pool="avg", fc_norm=False)), 64),
    "swin-narrow": (_spread(_narrow_swin), 64),
    "hf-vit-narrow": (
        _spread(
            _huggingface_vit(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=64,
                patch_size=16,
            )  # fmt: skip
        ),
        64,
    ),
}
# The families the field uses, full size (make zoo-onnx).
FAMILIES = {
    "resnet18": (_torchvision("resnet18"), 224),
    "resnet50": (_torchvision("resnet50"), 224),
    "efficientnet_b0": (_timm("efficientnet_b0"), 224),
    "tf_efficientnet_b3": (_timm("tf_efficientnet_b3"), 300),
    "densenet121": (_torchvision("densenet121"), 224),
    "mobilenetv3_large_100": (_timm("mobilenetv3_large_100"), 224),
    # Layer scale at a trained network's order: its 1e-6 initial value makes every block an
    # identity, and then no map tells the blocks (or a target) apart.
    "convnext_tiny": (_timm("convnext_tiny", ls_init_value=0.5), 224),
    "regnety_008": (_timm("regnety_008"), 224),
    "shufflenet_v2_x0_5": (_torchvision("shufflenet_v2_x0_5"), 224),
    "shufflenet_v2_x1_0": (_torchvision("shufflenet_v2_x1_0"), 224),
    # Vision transformers: tokens, folded back into the patch grid for Grad-CAM.
    "vit_tiny_patch16_224": (_timm("vit_tiny_patch16_224"), 224),
    "deit_tiny_distilled_patch16_224": (_timm("deit_tiny_distilled_patch16_224"), 224),
    # Layer scale at a trained network's order, as for ConvNeXt: at 1e-5 every block is an
    # identity and every normalisation's output alike (no module is told apart by its values).
    "vit_little_patch16_reg4_gap_256": (
        _timm("vit_little_patch16_reg4_gap_256", init_values=0.5),
        256,
    ),
    "swin_tiny_patch4_window7_224": (_timm("swin_tiny_patch4_window7_224"), 224),
    "hf_vit_tiny_patch16_224": (
        _huggingface_vit(
            hidden_size=192,
            num_hidden_layers=12,
            num_attention_heads=3,
            intermediate_size=768,
            image_size=224,
            patch_size=16,
        ),
        224,
    ),  # fmt: skip
}


def build(name: str):  # noqa: ANN201 - a torch.nn.Module
    import torch

    builder, size = {**FIXTURES, **FAMILIES}[name]
    torch.manual_seed(SEED)
    model = builder().eval()
    _settle_batch_norm(model, size)
    return model, size


def _settle_batch_norm(model, size: int) -> None:  # noqa: ANN001
    """Random weights with BatchNorm at its initial statistics make activations explode or
    vanish through a deep network (every map then looks alike). A few forward passes in
    train mode give each BatchNorm the statistics of images, as training would."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, size, size, generator=generator))
    model.eval()


def export_onnx(model, size: int, path: Path) -> None:  # noqa: ANN001
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,  # the TorchScript exporter: what most published .onnx files come from
        )


# Transformer fixtures → the module pytorch-grad-cam explains, the one dermcam's automatic
# choice must land on: the last block's normalisation whose patches reach the score (after a
# class-token model's last attention only the class token does, so norm1 there; norm2 where
# the head pools the patches).
FIXTURE_LAYERS = {
    "vit-narrow": "blocks.1.norm1",
    "deit-narrow": "blocks.1.norm1",
    "vit-reg4-narrow": "blocks.1.norm2",
    "swin-narrow": "layers.1.blocks.0.norm2",
    "hf-vit-narrow": "model.vit.layers.1.layernorm_before",
}
PHOTOS = ("ISIC_0000169.jpg", "ISIC_0000320.jpg", "ISIC_0000471.jpg", "ISIC_0000541.jpg")
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def fixtures(out: Path) -> None:
    for name in FIXTURES:
        model, size = build(name)
        export_onnx(model, size, out / f"{name}.onnx")
        print(f"{name}: {(out / f'{name}.onnx').stat().st_size / 1e6:.2f} MB, {size} px")
        if name in FIXTURE_LAYERS:
            reference_maps(model, name, size, out / f"{name}.npz")


def _token_layout(model, layer: str):  # noqa: ANN001, ANN202
    """The prefix-token count and patch grid as the model itself states them (timm's
    `num_prefix_tokens` and grid sizes; a Hugging Face ViT's one class token)."""
    if hasattr(model, "num_prefix_tokens"):  # timm ViT, DeiT, registers
        return int(model.num_prefix_tokens), tuple(model.patch_embed.grid_size)
    if hasattr(model, "layers"):  # timm Swin: the block's own resolution, no prefix
        return 0, tuple(model.get_submodule(layer.rsplit(".", 1)[0]).input_resolution)
    config = model.model.config  # Hugging Face ViT: a class token before the patches
    side = config.image_size // config.patch_size
    return 1, (side, side)


def reference_maps(model, name: str, size: int, path: Path) -> None:  # noqa: ANN001
    """pytorch-grad-cam's maps of real photographs (isic-uda1, resized to the input) at the
    fixture's layer, at the grid's own resolution, for the best-scored class whose map is not
    flat: what make test holds dermcam's served maps to, without torch."""
    import torch
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = FIXTURE_LAYERS[name]
    prefix, grid = _token_layout(model, layer)
    photos = Path(__file__).resolve().parents[2] / "data" / "isic-uda1" / "images"
    images = np.stack([
        np.asarray(Image.open(photos / p).convert("RGB").resize((size, size), Image.BILINEAR))
        for p in PHOTOS
    ])  # fmt: skip
    x = torch.from_numpy(((images / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True).numpy()

    class AtTheGrid(GradCAM):  # maps at the target's resolution, not upsampled
        def get_target_width_height(self, input_tensor):  # noqa: ANN001, ANN202
            return grid[1], grid[0]

    fold = {"layout": "tokens", "prefix_tokens": prefix, "grid": list(grid)}
    cam = AtTheGrid(
        model=model,
        target_layers=[model.get_submodule(layer)],
        reshape_transform=_grid_transform(fold),
    )
    classes, maps = [], []
    for i, order in enumerate(ranked):  # the best-scored class whose map is not flat (a map
        for k in order:  # all ≤ 0 is zeroed by the ReLU: nothing to correlate)
            found = cam(x[i : i + 1], targets=[ClassifierOutputTarget(int(k))])[0]
            if found.std() > 0:
                break
        classes.append(int(k))
        maps.append(found)
    classes, maps = np.array(classes), np.stack(maps)
    rollouts = {}
    if name != "swin-narrow":  # windowed attention: no rollout over the image
        from model_store.demos.torch_rollout import rollout_maps

        per_image = [rollout_maps(model, x[i : i + 1], int(k), prefix, grid) for i, k in
                     enumerate(classes)]  # fmt: skip
        rollouts = {m: np.stack([r[m] for r in per_image]).astype(np.float32) for m in per_image[0]}
    np.savez_compressed(
        path, images=images, classes=classes, maps=maps.astype(np.float32),
        layer=np.array(layer), prefix_tokens=np.array(prefix), grid=np.array(grid),
        photos=np.array(PHOTOS), **rollouts,
    )  # fmt: skip
    print(f"  {path.name}: pytorch-grad-cam at {layer}, {prefix} prefix, grid {grid}")


def family(name: str, out: Path) -> None:
    import torch

    model, size = build(name)
    export_onnx(model, size, out)
    torch.save(model.state_dict(), out.with_suffix(".pt"))
    print(json.dumps({"name": name, "size": size, "bytes": out.stat().st_size}))


def reference(name: str, weights: Path, job: Path) -> None:
    """pytorch-grad-cam's maps for a job: `images` NCHW preprocessed as dermcam did, the
    `classes` it explained, `target` (the value of dermcam's target tensor for images[0],
    NCHW) and `dermcam_maps` (its maps at the target's resolution). Writes `torch_maps`
    [N, H, W], `torch_layer` and `r` (Pearson, per image, both maps through pytorch-grad-cam's
    own `scale_cam_image` to the input size) into the job."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, _ = build(name)
    model.load_state_dict(torch.load(weights))
    data = dict(np.load(job))
    images = torch.from_numpy(data["images"])
    fold = json.loads(str(data["fold"])) if "fold" in data else None
    transform = _grid_transform(fold)
    with _out_of_place(model):
        layer, module = _module_with_output(model, images[:1], data["target"], transform)
        cam = GradCAM(model=model, target_layers=[module], reshape_transform=transform)
        maps = np.stack([
            cam(images[i : i + 1], targets=[ClassifierOutputTarget(int(k))])[0]
            for i, k in enumerate(data["classes"])
        ])  # fmt: skip
    size = (images.shape[3], images.shape[2])
    ours = scale_cam_image(data["dermcam_maps"], target_size=size)
    r = [_pearson(a, b) for a, b in zip(ours, maps, strict=True)]
    np.savez(job, **data, torch_maps=maps, torch_layer=np.array(layer), r=np.array(r))


@contextlib.contextmanager
def _out_of_place(model):  # noqa: ANN001, ANN202
    """Every ReLU out of place, the same arithmetic: a hook keeps a view of a layer's output,
    and an in-place ReLU after the layer (DenseNet's `F.relu(features, inplace=True)`)
    overwrites the activations pytorch-grad-cam holds while its gradient stays the one before
    the ReLU — a map of no single tensor (torchvision PR #8306, captum issue #156)."""
    import torch.nn.functional as F  # noqa: N812

    relu = F.relu
    flags = [
        (m, m.inplace) for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)
    ]
    for m, _ in flags:
        m.inplace = False
    F.relu = lambda x, inplace=False: relu(x, inplace=False)
    try:
        yield
    finally:
        F.relu = relu
        for m, inplace in flags:
            m.inplace = inplace


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else float(np.allclose(a, b))


def _grid_transform(fold: dict | None):  # noqa: ANN202
    """pytorch-grad-cam's `reshape_transform` for a folded target, as its ViT and Swin
    tutorials write it: prefix tokens dropped, patches to [B, h, w, C], channels first."""
    if fold is None:
        return None
    h, w = fold["grid"]

    def transform(tensor):  # noqa: ANN001, ANN202
        if fold["layout"] == "tokens":
            tensor = tensor[:, fold["prefix_tokens"] :, :].reshape(tensor.size(0), h, w, -1)
        return tensor.permute(0, 3, 1, 2)

    return transform


def _module_with_output(model, image, value: np.ndarray, transform=None):  # noqa: ANN001, ANN202
    """The outermost module whose output equals `value` (the ONNX target tensor's, NCHW),
    after `transform` (a folded target's)."""
    import torch

    def as_map(o):  # noqa: ANN001, ANN202
        try:
            return (transform(o) if transform else o).detach().numpy()
        except (RuntimeError, IndexError):  # a tensor of another shape: not the target
            return None

    outputs: dict[str, np.ndarray] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, i, o, name=name: (
                outputs.__setitem__(name, as_map(o)) if isinstance(o, torch.Tensor) else None
            )
        )
        for name, module in model.named_modules()
        if name
    ]
    with torch.no_grad():
        model(image)
    for hook in hooks:
        hook.remove()
    scale = float(np.abs(value).max()) or 1.0
    same = [
        name
        for name, out in outputs.items()
        if out is not None
        and out.shape == value.shape
        and float(np.abs(out - value).max()) <= 1e-3 * scale
    ]
    if not same:
        raise SystemExit("no module of the PyTorch model outputs dermcam's target tensor")
    chosen = min(same, key=lambda n: n.count("."))  # a whole block, never a reused activation
    return chosen, model.get_submodule(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.demos.torch_specimens")
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("fixtures")
    made.add_argument("--out", default="tests/fixtures/onnx")
    one = commands.add_parser("family")
    one.add_argument("name", choices=sorted(FAMILIES))
    one.add_argument("--out", required=True)
    ref = commands.add_parser("reference")
    ref.add_argument("name", choices=sorted({**FIXTURES, **FAMILIES}))
    ref.add_argument("--weights", required=True)
    ref.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    if args.command == "fixtures":
        fixtures(Path(args.out))
    elif args.command == "family":
        family(args.name, Path(args.out))
    else:
        reference(args.name, Path(args.weights), Path(args.job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
