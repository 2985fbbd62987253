"""The committed demo model: small, marked as a demo, and its Grad-CAM points at lesions."""

import pytest

from dermcam.engine import LiteRTEngine
from model_store.evaluation.evaluate import evaluate
from model_store.synthetic import dataset


def test_artifacts_are_small_and_marked(demo_model_dir):
    total = sum(f.stat().st_size for f in demo_model_dir.iterdir())
    assert total < 10 * 1024 * 1024
    engine = LiteRTEngine(str(demo_model_dir))
    assert engine.manifest.demo and engine.manifest.name == "demo"
    report = engine.manifest.raw["evaluation"]
    assert report["pointing_game"] >= 0.90 and report["accuracy"] >= 0.85


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_pointing_game_on_fresh_held_out_images(demo_model_dir, method):
    """Images from a seed neither training nor the build's own evaluation used."""
    images, labels, masks = dataset(seed=4242, count=140, size=128)
    result = evaluate(LiteRTEngine(str(demo_model_dir)), images, labels, masks, method)
    assert result["accuracy"] >= 0.85
    assert result["pointing_game"] >= 0.90
