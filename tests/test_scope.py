"""Out of scope: quality bounds before the model, k-NN distance in its features after, and an
answer that declines (422 out_of_scope, an abstain object, no diagnosis, no heat map)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageEnhance, ImageFilter

from conftest import ISIC, ROOT, post_multipart
from dermcam.errors import ModelUnavailable
from dermcam.manifest import read_manifest
from dermcam.quality import Bounds, measure
from dermcam.scope import knn_distances, normalised
from model_store.calibration.scope import conformal_threshold, fit_scope, write_reference

DEMO = ROOT / "model_store" / "models" / "demo" / "1"
METADATA_ENV = {"DERMCAM_MODEL_DIR": str(ROOT / "model_store" / "models" / "demo-metadata" / "1")}
skimage = pytest.importorskip("skimage")
CAT = Path(skimage.__file__).parent / "data" / "chelsea.png"  # scikit-image's own cat


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def _isic(n: int = 0) -> Image.Image:
    return Image.open(sorted((ISIC / "images").glob("*.jpg"))[n]).convert("RGB")


def test_every_real_dermoscopy_photograph_passes_the_quality_bounds():
    bounds = Bounds()
    problems = {}
    for path in sorted((ISIC / "images").glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        found = measure(image, *image.size).problem(bounds)
        if found:
            problems[path.name] = found
    assert problems == {}


@pytest.mark.parametrize(
    ("degrade", "reason"),
    [
        (lambda im: im.resize((40, 40)), "too small"),
        (lambda im: ImageEnhance.Brightness(im).enhance(0.15), "too dark"),
        (lambda im: ImageEnhance.Brightness(im).enhance(3.0), "over-exposed"),
        (
            lambda im: Image.new("RGB", im.size, (150, 120, 110)).filter(ImageFilter.BLUR),
            "too blurred",
        ),
    ],
)
def test_degraded_photographs_are_named_for_what_is_wrong(degrade, reason):
    image = degrade(_isic(3))
    assert measure(image, *image.size).problem(Bounds()) == reason


def test_knn_distances_are_the_kth_nearest_and_skip_themselves():
    rng = np.random.default_rng(0)
    reference = normalised(rng.normal(size=(40, 8)))
    queries = normalised(rng.normal(size=(5, 8)))
    brute = np.sort(1 - queries @ reference.T, axis=1)[:, 2]
    np.testing.assert_allclose(knn_distances(reference, queries, 3), brute, rtol=1e-6)
    own = 1 - reference @ reference.T
    np.fill_diagonal(own, np.inf)
    np.testing.assert_allclose(
        knn_distances(reference, reference, 3, leave_one_out=True),
        np.sort(own, axis=1)[:, 2],
        rtol=1e-6,
    )


def test_the_threshold_accepts_what_it_states_and_declines_another_cluster():
    """Conformal: new photographs like the reference are accepted >= the stated share
    (here on 4,000 fresh draws); a cluster pointing elsewhere is declined."""
    rng = np.random.default_rng(1)
    centre = np.zeros(16)
    centre[0] = 4.0
    fit = centre + rng.normal(size=(300, 16))
    fresh = centre + rng.normal(size=(4000, 16))
    block, reference = fit_scope(fit, fresh[:200], acceptance=0.9)
    distances = knn_distances(normalised(reference.astype(np.float32)), normalised(fresh), 5)
    assert (distances <= block["threshold"]).mean() >= 0.9 - 0.02  # 0.02: sampling, n=4000
    other = -centre + rng.normal(size=(200, 16))
    assert (
        knn_distances(normalised(reference.astype(np.float32)), normalised(other), 5)
        > block["threshold"]
    ).all()
    assert conformal_threshold(np.arange(1, 11), 0.9) == 10  # ceil(11 * 0.9) = 10th
    assert conformal_threshold(np.arange(1, 101), 0.9) == 91


def test_a_tampered_reference_makes_the_model_unavailable(scoped_demo, tmp_path):
    model = tmp_path / "demo"
    shutil.copytree(scoped_demo, model)
    np.save(model / "scope_reference.npy", np.zeros((4, 4), np.float16))
    with pytest.raises(ModelUnavailable, match="sha256"):
        read_manifest(model)
    (model / "scope_reference.npy").unlink()
    with pytest.raises(ModelUnavailable, match="not beside the manifest"):
        read_manifest(model)


def test_write_reference_records_its_hash(tmp_path):
    block, reference = fit_scope(np.eye(12)[:, :6] + 0.1, np.eye(12)[:4, :6] + 0.1)
    written = write_reference(tmp_path, block, reference)
    assert written["reference"] == "scope_reference.npy"
    assert (tmp_path / "scope_reference.npy").is_file()
    assert len(written["sha256"]) == 64


def test_the_committed_demo_carries_quality_bounds_and_no_feature_rule():
    trust = read_manifest(DEMO).trust
    assert trust.quality == Bounds()
    assert trust.scope is None  # its features cannot carry one (calibrate_on_generated)


def test_a_scope_rule_records_its_acceptance(scoped_demo):
    scope = read_manifest(scoped_demo).trust.scope
    assert scope.acceptance == 0.95 and scope.k == 5
    assert scope.measured["in_scope"] > 0 and 0 <= scope.measured["accepted"] <= 1


@pytest.mark.parametrize("function", ["predict", "gradcam"])
def test_a_cat_gets_no_diagnosis(single_function, scoped_demo, function):
    """The mechanism on the committed demo's weights: scikit-image's cat is 4x the threshold
    away (0.11 vs 0.028). The real model's rule: tests/test_ham10000.py."""
    url, _ = single_function(function, env={"DERMCAM_MODEL_DIR": str(scoped_demo)})
    response = post_multipart(url, _jpeg(Image.open(CAT)), filename="cat.jpg")
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["code"] == "out_of_scope"
    assert body["abstain"]["reason"] == "not a skin lesion"
    assert body["abstain"]["score"] > body["abstain"]["threshold"]
    assert "predictions" not in body and "heatmap" not in body and "top" not in body


def test_measure_mode_answers_and_logs_what_it_would_decline(single_function, scoped_demo):
    env = {"DERMCAM_MODEL_DIR": str(scoped_demo), "DERMCAM_SCOPE": "measure"}
    url, _ = single_function("predict", env=env, with_storage=False)
    response = post_multipart(url, _jpeg(Image.open(CAT)), filename="cat.jpg")
    assert response.status_code == 200 and response.json()["calibrated"] is True


@pytest.mark.parametrize(
    ("degrade", "reason"),
    [
        (lambda im: ImageEnhance.Brightness(im).enhance(0.15), "too dark"),
        (lambda im: im.resize((40, 40)), "too small"),
    ],
)
def test_a_degraded_photo_is_declined_for_its_reason(stack, lesion_png, degrade, reason):
    image = degrade(Image.open(io.BytesIO(lesion_png)).convert("RGB"))
    response = requests.post(
        stack.predict_url, data=_jpeg(image), headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 422
    abstain = response.json()["abstain"]
    assert abstain["reason"] == reason and abstain["advice"]
    assert set(abstain["figures"]) == {"short_side", "luminance", "clipped", "sharpness"}


def test_an_uncalibrated_model_serves_as_before(single_function, lesion_png):
    url, _ = single_function("predict", env=METADATA_ENV, with_storage=False)
    dark = ImageEnhance.Brightness(Image.open(io.BytesIO(lesion_png)).convert("RGB")).enhance(0.15)
    response = requests.post(
        url, data=_jpeg(dark), headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    assert response.status_code == 200
    assert response.json()["calibrated"] is False


def test_calibrate_without_features_records_no_scope(tmp_path, capsys):
    """Artifacts exported before the predict graph returned features: a trust block without
    a scope rule, and the message says to re-export."""
    from model_store.calibration.cli import calibrate_on_generated

    model = tmp_path / "meta"
    shutil.copytree(ROOT / "model_store" / "models" / "demo-metadata" / "1", model)
    assert calibrate_on_generated(model, count=280, scope=True) == 0
    assert "re-export" in capsys.readouterr().err
    trust = json.loads((model / "manifest.json").read_text())["trust"]
    assert "scope" not in trust and trust["quality"] == Bounds().block()


def test_the_benchmark_measures_what_it_says():
    """AUROC equals scikit-learn's; FPR95 is the share accepted at 95 % in-scope acceptance;
    every out-of-scope photograph named is in the installed packages."""
    from sklearn.metrics import roc_auc_score

    from model_store.calibration.benchmark import SOURCES, auroc, crops, fpr_at_tpr, package_file

    rng = np.random.default_rng(2)
    inside, outside = rng.normal(size=300), rng.normal(1.0, size=120)
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(120)], np.r_[inside, outside])
    assert auroc(inside, outside) == pytest.approx(expected, abs=1e-12)
    assert fpr_at_tpr(inside, outside) == pytest.approx(
        float((outside <= np.quantile(inside, 0.95)).mean())
    )
    assert len(crops(Image.new("RGB", (100, 80)))) == 5
    assert all(package_file(p, n).is_file() for files in SOURCES.values() for p, n in files)
    assert len(SOURCES) >= 5  # kinds, for leave-one-source-out
