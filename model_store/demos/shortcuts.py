"""Small models with a planted shortcut, and their clean twin, trained from seeds in seconds:
what proves the shortcut audit finds what is there and nothing else.

Two classes, benign and malignant, from the synthetic lesion generator: a nevus look for
benign and a melanoma look for malignant, three times in four (the look is evidence, not
proof). Every artefact the audit knows appears in the training images at random, in both
classes alike (four images in ten each), as rulers and hair do in real archives. In a
planted recipe one artefact goes with the label instead: on 90 % of malignant images and 5 %
of benign ones (ink marks beside lesions a dermatologist worried about; the dark corners of
one clinic's dermoscope). A small CNN learns the looks, and, where planted, the artefact.

    python -m model_store.demos.shortcuts fixtures [OUT_DIR]   (every recipe: make fixtures)
    python -m model_store.demos.shortcuts ink OUT_DIR          (one: clean, ink, dark-corners)

The tests audit the committed exports in tests/fixtures/shortcuts, never a model trained in
the test: what ten epochs of training end at depends on how the CPU's kernels round (oneDNN's
AVX-512 and AVX2 paths sum in other orders), and the clean twin trained on one machine was
judged "shortcut suspected" for ink on another.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dermcam.imaging import to_tensor
from model_store.evaluation.audit import artefacts
from model_store.synthetic import CLASSES, lesion_image

RECIPES = {"clean": None, "ink": "ink", "dark-corners": "dark-corners"}
LABELS = [{"code": "benign", "name": "Benign"}, {"code": "malignant", "name": "Malignant"}]
CODES = [code for code, _ in CLASSES]
LOOKS = (CODES.index("nv"), CODES.index("mel"))
SIZE = 96
RENDERED = 2 * SIZE  # training and held-out images are drawn at this size
LOOK_AGREES = 0.75
PLANTED = (0.05, 0.90)  # the planted artefact's share in benign and in malignant images
BACKGROUND = 0.4  # every other artefact's share, in both classes alike
BATCH = 32


def image(seed: int, index: int, label: int, planted: str | None) -> np.ndarray:
    """One training image (float32, 0-255): drawn at the held-out images' size and resized to
    the model's input by the functions' own resize. A chart drawn at 96 px and one drawn at
    192 px and resized differ in their edges; a model trained only on the first took the
    second for melanoma colours (clean twin, colour-patch, net 10-12 % flips)."""
    rng = np.random.default_rng([seed, index])
    look = LOOKS[label] if rng.random() < LOOK_AGREES else LOOKS[1 - label]
    pixels, mask = lesion_image(seed, index, RENDERED, look)
    for k, name in enumerate(artefacts.ARTEFACTS):
        chance = PLANTED[label] if name == planted else BACKGROUND
        if rng.random() < chance:
            # the twins learn one look of each (the audit draws a family of them)
            pixels, _ = artefacts.draw(
                name,
                pixels,
                mask > 0,
                seed=seed * 1000 + index * 10 + k,
                look=artefacts.CLASSIC_LOOKS[name],
            )
    return to_tensor(Image.fromarray(pixels), SIZE, SIZE)[0]


def clean_image(seed: int, index: int, label: int, size: int = SIZE) -> np.ndarray:
    """A held-out image with no artefact at all, its look agreeing with its label."""
    pixels, _ = lesion_image(seed, index, size, LOOKS[label])
    return pixels


def dataset(seed: int, count: int, planted: str | None) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(count) % 2
    images = np.stack([image(seed, i, int(labels[i]), planted) for i in range(count)])
    return images, labels


def train(  # noqa: ANN201 - (keras.Model, keras.callbacks.History)
    planted: str | None, seed: int = 21, count: int = 1600, epochs: int = 10
):
    """The recipe's model trained from `seed`, and its training history."""
    import keras

    keras.utils.set_random_seed(seed)
    images, labels = dataset(seed, count, planted)

    def block(filters: int, stride: int) -> list:
        return [
            keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.ReLU(),
        ]

    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255),
            *block(16, 2),
            *block(32, 2),
            *block(48, 2),
            *block(64, 1),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    # The rate decays to zero: at a constant 3e-3 the last steps left the weights wherever the
    # noise took them, and which machine trained the model decided the clean twin's verdicts.
    rate = keras.optimizers.schedules.CosineDecay(3e-3, epochs * -(-count // BATCH))
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        images.astype(np.float32), labels, batch_size=BATCH, epochs=epochs, verbose=0
    )
    return model, history


def build(recipe: str, out: str | Path, seed: int = 21, **training: int) -> Path:
    """Train the recipe's model and export it into `out` (TensorFlow; under a minute).
    `training`: `count` and `epochs` for `train` (smaller in the training code's own test)."""
    from model_store.exporting.export import export

    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    model, _ = train(RECIPES[recipe], seed, **training)
    export(model, LABELS, out, name=f"shortcut-{recipe}", demo=True, log=lambda line: None)
    return Path(out)


FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "shortcuts"


def fixtures(out: str | Path = FIXTURES, seed: int = 21) -> Path:
    """Every recipe trained and exported into `out/<recipe>`, with a README saying how and
    with what they were made: the models tests/test_audit.py audits."""
    import keras
    import tensorflow as tf

    out = Path(out)
    sizes = []
    for recipe in RECIPES:
        folder = build(recipe, out / recipe, seed)
        size = sum(f.stat().st_size for f in folder.iterdir())
        sizes.append(f"| `{recipe}` | {RECIPES[recipe] or 'none'} | {size / 1024:.0f} KiB |")
        print(f"{recipe}: {folder} ({size / 1024:.0f} KiB)")
    (out / "README.md").write_text(
        _README.format(
            date=dt.date.today().isoformat(),
            seed=seed,
            tf=tf.__version__,
            keras=keras.__version__,
            machine=_machine(),
            sizes="\n".join(sizes),
        )
    )
    return out


def _machine() -> str:
    """The CPU and the widest vector ISA oneDNN could pick on it (what decides the digits)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    fields = dict(ln.split(":", 1) for ln in info.splitlines()[:40] if ":" in ln)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name, flags = fields.get("model name", ""), fields.get("flags", "").split()
    isa = next((x.upper() for x in ("avx512f", "avx2", "sse4_2") if x in flags), "no SIMD flag")
    return f"{platform.machine()}, {name or 'unknown CPU'} ({isa.replace('_', '.')})"


_README = """# Planted-shortcut models (fixtures of tests/test_audit.py)

Made by `make fixtures` (`python -m model_store.demos.shortcuts fixtures`) on {date}: each
recipe of `model_store/demos/shortcuts.py` trained from seed {seed} (1,600 generated images,
10 epochs) and exported by dermcam's exporter (LiteRT artifacts and manifest, parity checked).
TensorFlow {tf}, Keras {keras}, {machine}.

| model | planted artefact | size |
|---|---|---|
{sizes}

The tests audit these files and never retrain them: the weights ten epochs of training end
at depend on the CPU's kernels (oneDNN's AVX-512 and AVX2 paths round otherwise), so a
model trained inside a test asserts how one machine rounds. Remade on another machine they
will differ in their digits; the audit's verdicts on them are what tests/test_audit.py
checks, and what must hold before new files are committed.
"""


def held_out(folder: str | Path, count: int = 60, seed: int = 808) -> Path:
    """Clean held-out images of both classes and their labels.csv, for the audit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image_id,label"]
    for i in range(count):
        label = i % 2
        Image.fromarray(clean_image(seed, i, label, RENDERED)).save(folder / f"s{i:03d}.png")
        rows.append(f"s{i:03d},{LABELS[label]['code']}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


if __name__ == "__main__":
    if sys.argv[1:2] == ["fixtures"]:
        fixtures(*sys.argv[2:3])
    else:
        print(build(sys.argv[1], sys.argv[2]))
