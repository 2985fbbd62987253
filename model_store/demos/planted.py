"""A shortcut planted in a model that exists, the way a user's model would carry one: the
committed demo network, its head unchanged, plus a branch that pushes the melanoma logit up
wherever a blue marker pen has drawn on the skin — not the violet ring the audit used to draw,
so an audit that draws one look of ink cannot see it (issue #38). No training: the branch's
weights are set by hand (a 1×1 convolution along the blue pen's colour, on a threshold most
blue marks pass and violet ones do not), so the model does the same on every machine.

    python -m model_store.demos.planted --out DIR   (exports it with dermcam's exporter)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

DEMO = Path(__file__).resolve().parents[1] / "models" / "demo" / "1"
# The blue pen's colour direction on 0-255 inputs at the model's 128 px: −2 R + 0.5 G + 1.5 B
# (a blue pen multiplied into skin leaves green above red, which skin, lesions and violet ink
# do not). Measured on 80 isic-uda1 photographs with dots at 0.6 opacity: past THRESHOLD on
# 50 % of blue-inked images whose original is not, on 4 % with the classic violet ring, on
# none with violet dots, black or red, 2 % with green; 5 % of originals are past it already.
BLUE_PEN = (-2.0, 0.5, 1.5)
THRESHOLD = 40.0
PUSH = 0.5  # melanoma logit per unit above the threshold


def planted_model(target: str = "mel"):  # noqa: ANN201 - a keras.Model
    """The demo network with the blue-pen branch added to `target`'s logit."""
    import keras

    demo = keras.models.load_model(DEMO / "model.keras", compile=False)
    labels = [label["code"] for label in json.loads((DEMO / "manifest.json").read_text())["labels"]]
    head = demo.layers[-1]
    logits_layer = keras.layers.Dense(head.units, name="logits")
    logits = logits_layer(head.input)
    logits_layer.set_weights(head.get_weights())
    pen = keras.layers.Conv2D(1, 1, name="blue_pen")
    found = pen(demo.input)
    pen.set_weights([np.array(BLUE_PEN, np.float32).reshape(1, 1, 3, 1), np.array([-THRESHOLD])])
    strongest = keras.layers.GlobalMaxPooling2D()(keras.layers.ReLU()(found))
    push_layer = keras.layers.Dense(head.units, use_bias=False, name="push")
    push = push_layer(strongest)
    kernel = np.zeros((1, head.units), np.float32)
    kernel[0, labels.index(target)] = PUSH
    push_layer.set_weights([kernel])
    z = keras.layers.Add()([logits, push])
    out = keras.layers.Activation("softmax", name="probabilities")(z)
    return keras.Model(demo.input, out, name="demo_blue_pen")


def export_planted(out: Path, log=print) -> dict:  # noqa: ANN001
    """The planted model through dermcam's exporter, as the demo was exported."""
    from model_store.exporting.export import export

    manifest = json.loads((DEMO / "manifest.json").read_text())
    return export(
        planted_model(),
        manifest["labels"],
        out,
        name="demo-blue-pen",
        preprocessing=manifest["preprocessing"],
        resize=manifest["input"]["resize"],
        target=manifest["target_layer"],
        log=log,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.demos.planted")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    export_planted(Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
