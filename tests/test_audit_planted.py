"""A shortcut planted the way a user's model would carry one (model_store/demos/planted.py:
the committed demo network, its head unchanged, plus a branch that reacts to a blue marker
pen; weights set by hand, nothing trained), audited on 60 real isic-uda1 photographs. The
audit's ink, drawn from a family of looks, finds it and names the look; the single look the
audit drew before (a violet ring, the one its own twins were trained on) does not move it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO_MODEL, ISIC, ISIC_IMAGES
from dermcam import imaging
from dermcam.engine import LiteRTEngine
from dermcam.inputs import image_input
from model_store.demos.planted import export_planted
from model_store.evaluation.audit import artefacts, lesion, probe
from model_store.evaluation.audit.cli import main as audit
from model_store.evaluation.audit.ink import CLASSIC_INK

pytestmark = pytest.mark.numerics
FIRST_WHOLE = "ISIC_0000114"  # the thumbnails before it are degenerate (data/isic-uda1/README)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted") / "model"
    export_planted(out, log=lambda line: None)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("isic")
    chosen = sorted(p for p in ISIC_IMAGES.glob("*.jpg") if p.stem >= FIRST_WHOLE)[:60]
    for path in chosen:
        shutil.copyfile(path, folder / path.name)
    shutil.copyfile(ISIC / "labels.csv", folder / "labels.csv")
    return folder


def _audited(model, photos, out) -> dict:
    argv = [str(model), "--images", str(photos), "--labels", str(photos / "labels.csv")]
    argv += ["--map", "melanoma=mel,nevus=nv", "--artefacts", "ink,ruler,hair"]
    assert audit([*argv, "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())["summary"]


def test_a_blue_pen_shortcut_is_found_and_its_look_named(planted, photos, tmp_path):
    summary = _audited(planted, photos, tmp_path / "audit")
    verdicts = summary["verdicts"]
    assert verdicts["ink"]["verdict"] == "shortcut suspected", verdicts["ink"]
    colours = summary["artefacts"]["ink"]["looks"]["colour"]
    assert summary["artefacts"]["ink"]["looks"]["most_moved"]["value"] == "blue"
    assert colours["blue"]["mean_delta"] > 0.3 and colours["blue"]["images"] >= 5
    assert abs(colours["violet"]["mean_delta"]) < 0.05  # the branch ignores violet
    assert "blue" in (tmp_path / "audit" / "report.md").read_text()
    # The network it was planted in, audited alike: blue ink leaves it alone, and the others
    # judged as on the planted one (the demo network's own reaction to a black ruler, a
    # dark band along the edge, is its own: docs/AUDIT.md), so the branch is all ink found.
    plain = _audited(DEMO_MODEL, photos, tmp_path / "plain")
    assert abs(plain["artefacts"]["ink"]["looks"]["colour"]["blue"]["mean_delta"]) < 0.05
    for name in ("ruler", "hair"):
        assert plain["verdicts"][name]["verdict"] == verdicts[name]["verdict"], name
    assert verdicts["hair"]["verdict"] == "no effect measured"


def test_the_audits_old_single_look_does_not_move_it(planted, photos):
    engine = LiteRTEngine(str(planted))
    mel = engine.manifest.codes.index("mel")
    wanted = image_input(engine.manifest)
    moved = []
    for path in sorted(photos.glob("*.jpg"))[:20]:
        pixels = probe.picture_of(path.read_bytes())
        mask = lesion.estimate(Image.fromarray(pixels))
        inked, _ = artefacts.draw("ink", pixels, mask, seed=1, look=CLASSIC_INK)
        before, after = (
            engine.predict(imaging.decode(probe.png(p), 10**8, wanted).tensor)
            for p in (pixels, inked)
        )
        moved.append(after[mel] - before[mel])
    assert abs(np.mean(moved)) < 0.05
