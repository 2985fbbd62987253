"""PyTorch models as their users export them (`torch.onnx.export`, NCHW, opset 17, a dynamic
batch), random weights and a 7-class head; and pytorch-grad-cam's own Grad-CAM of them, the
field's reference. Runs in `.venv-torch` (torch, torchvision, timm, grad-cam; no TensorFlow):

    python -m model_store.demos.torch_specimens fixtures --out tests/fixtures/onnx
    python -m model_store.demos.torch_specimens family NAME --out FILE.onnx
    python -m model_store.demos.torch_specimens reference NAME --weights FILE.pt --job JOB.npz

`fixtures`: narrow versions of the families (a few MB in all), committed, so that `make test`
exports and serves PyTorch models without torch. `family`: one full-size family for
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


# name → (builder, input size): committed for make test, narrow so they stay small.
FIXTURES = {
    "resnet-narrow": (_narrow_resnet, 64),
    "efficientnet-narrow": (_narrow_efficientnet, 64),
    "mobilenetv3-narrow": (_torchvision("mobilenet_v3_large", width_mult=0.25), 64),
    "densenet-narrow": (_narrow_densenet, 64),
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
    # A vision transformer: tokens, not a feature map; where the road ends, said as it is.
    "vit_tiny_patch16_224": (_timm("vit_tiny_patch16_224"), 224),
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


def fixtures(out: Path) -> None:
    for name in FIXTURES:
        model, size = build(name)
        export_onnx(model, size, out / f"{name}.onnx")
        print(f"{name}: {(out / f'{name}.onnx').stat().st_size / 1e6:.2f} MB, {size} px")


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
    with _out_of_place(model):
        layer, module = _module_with_output(model, images[:1], data["target"])
        cam = GradCAM(model=model, target_layers=[module])
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


def _module_with_output(model, image, value: np.ndarray):  # noqa: ANN001, ANN202
    """The outermost module whose output equals `value` (the ONNX target tensor's)."""
    import torch

    outputs: dict[str, np.ndarray] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, i, o, name=name: (
                outputs.__setitem__(name, o.detach().numpy())
                if isinstance(o, torch.Tensor)
                else None
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
        if out.shape == value.shape and float(np.abs(out - value).max()) <= 1e-3 * scale
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
