"""A small vision transformer trained on real dermoscopy (isic-uda1, melanoma vs nevus), so
that explanation methods are judged on a model that decided something from photographs, not
on random weights. No pretrained weights can be fetched here: it is trained from scratch on
the 438 non-degenerate thumbnails' training split, which makes it a weak classifier (its
held-out AUC is reported with it) but a real one. Runs in `.venv-torch`:

    python -m model_store.demos.torch_isic --out DIR [--arch vit|vit-gap] [--epochs N]

writes DIR/model.onnx (labels `LABELS`), DIR/training.json and DIR/held-out/ (the
photographs it never saw, with labels.csv), the folder `model_store.evaluate` is run on.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import zlib
from pathlib import Path

import numpy as np

from model_store.demos.torch_specimens import MEAN, STD, export_onnx

ISIC = Path(__file__).resolve().parents[2] / "data" / "isic-uda1"
SIZE = 112
HELD_OUT = 0.3  # of the photographs, by a hash of the id: the same split on every machine
ARCHS = {
    # a class token read by the head
    "vit": {"global_pool": "token"},
    # no class token's readout: global average pooling of the patches, 4 registers
    "vit-gap": {"global_pool": "avg", "reg_tokens": 4, "fc_norm": False},
}
LABELS = "nv,mel"  # output 0, output 1: the exporter's --labels


def photographs() -> list[tuple[str, int]]:
    """(id, 1 for melanoma) of every thumbnail that is not degenerate (rows all alike)."""
    from PIL import Image

    found = []
    with open(ISIC / "labels.csv") as fh:
        for row in csv.DictReader(fh):
            with Image.open(ISIC / "images" / f"{row['image']}.jpg") as im:
                pixels = np.asarray(im.convert("L"), dtype=np.int16)
            if not np.all(pixels == pixels[:1]):
                found.append((row["image"], int(row["diagnosis"] == "melanoma")))
    return found


def held_out(image_id: str) -> bool:
    return zlib.crc32(image_id.encode()) % 1000 < HELD_OUT * 1000


def _tensor(ids: list[str]):  # noqa: ANN202
    import torch
    from PIL import Image

    images = np.stack([
        np.asarray(Image.open(ISIC / "images" / f"{i}.jpg").convert("RGB").resize(
            (SIZE, SIZE), Image.BILINEAR))
        for i in ids
    ])  # fmt: skip
    x = ((images / 255.0 - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    return torch.from_numpy(x)


def _augment(x):  # noqa: ANN001, ANN202 - dermoscopy has no up: flips and quarter turns
    import torch

    if torch.rand(()) < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, int(torch.randint(4, ())), dims=(-2, -1))


def train(arch: str, epochs: int, seed: int = 7):  # noqa: ANN201
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    found = photographs()
    train_set = [(i, y) for i, y in found if not held_out(i)]
    x = _tensor([i for i, _ in train_set])
    y = torch.tensor([y for _, y in train_set])
    model = VisionTransformer(
        img_size=SIZE, patch_size=16, embed_dim=96, depth=6, num_heads=3, mlp_ratio=2,
        num_classes=2, drop_rate=0.1, **ARCHS[arch],
    )  # fmt: skip
    weights = torch.tensor([1.0, float((y == 0).sum() / (y == 1).sum())])
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, 5e-4, total_steps=epochs * ((len(x) + 31) // 32)
    )
    for epoch in range(epochs):
        model.train()
        started, total = time.time(), 0.0
        for batch in torch.randperm(len(x)).split(32):
            optimiser.zero_grad()
            loss = loss_fn(model(torch.stack([_augment(v) for v in x[batch]])), y[batch])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(batch)
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.3f} ({time.time() - started:.1f} s)"
        )
    return model.eval(), found


def held_out_auc(model, found: list[tuple[str, int]]) -> dict:  # noqa: ANN001
    import torch

    test = [(i, y) for i, y in found if held_out(i)]
    with torch.no_grad():
        p = model(_tensor([i for i, _ in test])).softmax(1)[:, 1].numpy()
    y = np.array([y for _, y in test])
    ranks = p.argsort().argsort() + 1  # Mann-Whitney U: ties do not occur in float scores
    positives = int(y.sum())
    auc = (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (
        positives * (len(y) - positives)
    )
    return {"held_out": len(y), "melanomas": positives, "auc": round(float(auc), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.demos.torch_isic")
    parser.add_argument("--out", required=True)
    parser.add_argument("--arch", choices=sorted(ARCHS), default="vit")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args(argv)
    out = Path(args.out)
    model, found = train(args.arch, args.epochs)
    export_onnx(model, SIZE, out / "model.onnx")
    folder = out / "held-out"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "diagnosis"])
        for image_id, y in found:
            if held_out(image_id):
                link = folder / f"{image_id}.jpg"
                if not link.exists():
                    link.symlink_to(ISIC / "images" / f"{image_id}.jpg")
                writer.writerow([image_id, "mel" if y else "nv"])
    figures = {"arch": args.arch, "epochs": args.epochs, "size": SIZE, **held_out_auc(model, found)}
    (out / "training.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
