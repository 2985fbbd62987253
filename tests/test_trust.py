"""What an answer may claim: temperature scaling recovers a known temperature, operating points
reach their sensitivity, prediction-set thresholds equal crepes' conformal classifier on the
same scores, and the calibrate CLI refuses what it cannot fit; the served answers carry it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dermcam import trust
from dermcam.manifest import read_manifest
from model_store.calibration import fit
from model_store.calibration.cli import main as calibrate
from model_store.synthetic import write_folder


def overconfident(temperature: float, n: int = 4000, classes: int = 5, seed: int = 3):
    """Labels drawn from softmax(z), answered as softmax(z × temperature): a model whose
    calibrating temperature is exactly `temperature`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    truth = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in truth])
    served = np.exp(z * temperature)
    return served / served.sum(1, keepdims=True), labels


def test_temperature_scaling_recovers_a_known_temperature():
    raw, labels = overconfident(2.5)
    found = fit.fit_temperature(raw, labels)
    assert found == pytest.approx(2.5, rel=0.08)  # 4,000 draws: NLL's optimum is near T
    before = fit.calibration_metrics(raw, labels)
    after = fit.calibration_metrics(trust.calibrated(raw, found), labels)
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]
    assert before["mean_top_probability"] > before["accuracy"]  # overconfident, as served
    # the order of the classes never changes: the top class is the model's own
    assert (trust.calibrated(raw, found).argmax(1) == raw.argmax(1)).all()


def test_temperature_of_independent_units_is_per_unit_sigmoid():
    p = np.array([[0.9, 0.1, 0.5]])
    scaled = trust.calibrated(p, 2.0, independent=True)
    logit = np.log(p / (1 - p)) / 2.0
    np.testing.assert_allclose(scaled, 1 / (1 + np.exp(-logit)), rtol=1e-12)


def test_metrics_on_a_hand_made_case():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    m = fit.calibration_metrics(probs, labels, bins=10)
    # bins: 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (right) -> gaps .1, .8, .3, .4
    assert m["ece"] == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4, abs=1e-4)
    assert m["mce"] == pytest.approx(0.8, abs=1e-4)
    assert m["brier"] == pytest.approx((0.02 + 1.28 + 0.18 + 0.32) / 4, abs=1e-4)
    assert fit.wilson(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)


def test_the_threshold_reaches_the_target_sensitivity():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.beta(5, 2, 60), rng.beta(2, 5, 240)])
    positive = np.arange(300) < 60
    for target in (0.8, 0.9, 0.95):
        threshold = fit.sensitivity_threshold(scores, positive, target)
        point = fit.operating_point(scores, positive, threshold)
        assert point["sensitivity"] >= target
        # the highest such threshold: one step up loses a positive below the target
        above = np.sort(scores[positive][scores[positive] > threshold])
        if len(above):
            assert fit.operating_point(scores, positive, above[0])["sensitivity"] < target


def test_prediction_set_thresholds_equal_crepes():
    """dermcam's thresholds against crepes' ConformalClassifier on the same LAC scores:
    marginal, and one classifier per class for the class-conditional (Mondrian) thresholds.
    A class is in crepes' set when its non-smoothed p-value exceeds 1 - coverage."""
    from crepes import ConformalClassifier

    raw, labels = overconfident(1.0, n=900, classes=4, seed=9)
    cal, test = slice(0, 600), slice(600, 900)
    coverage = 0.9
    scores = 1.0 - raw[cal][np.arange(600), labels[cal]]
    test_scores = 1.0 - raw[test]

    marginal = fit.conformal_quantile(scores, coverage)
    cc = ConformalClassifier().fit(scores)
    p_values = cc.predict_p(test_scores, smoothing=False)
    np.testing.assert_array_equal(p_values > 1 - coverage, test_scores <= marginal)

    thresholds, how = fit.conformal_thresholds(raw[cal], labels[cal], coverage, minimum=30)
    assert how["mondrian_classes"] == [0, 1, 2, 3]
    for k in range(4):
        own = ConformalClassifier().fit(scores[labels[cal] == k])
        p_k = own.predict_p(test_scores[:, [k]], smoothing=False)[:, 0]
        np.testing.assert_array_equal(p_k > 1 - coverage, test_scores[:, k] <= thresholds[k])
    figures = fit.set_figures(raw[test], labels[test], thresholds)
    assert figures["coverage"] >= 0.85  # >= 90 % in expectation; 300 images, one draw


def test_a_class_with_too_few_photographs_shares_the_marginal_threshold():
    raw, labels = overconfident(1.0, n=300, classes=3, seed=4)
    labels[labels == 2] = 0
    labels[:10] = 2  # ten photographs of class 2
    thresholds, how = fit.conformal_thresholds(raw, labels, 0.9, minimum=30)
    assert 2 not in how["mondrian_classes"] and thresholds[2] == how["marginal"]
    assert fit.conformal_quantile(np.arange(5.0), 0.9) == 1.0  # too few for the rank: all


def test_the_set_always_holds_the_top_class_most_probable_first():
    probs = np.array([0.5, 0.3, 0.2])
    assert trust.prediction_set(probs, np.array([0.0, 0.8, 0.9])) == [0, 1, 2]
    assert trust.prediction_set(probs, np.array([0.0, 0.0, 0.0])) == [0]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("calibration"), seed=31, count=140, size=128)


@pytest.fixture
def demo_copy(demo_model_dir, tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(demo_model_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("trust", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_calibrate_writes_the_block_and_the_report(demo_copy, generated, tmp_path):
    out = tmp_path / "report"
    argv = [str(demo_copy), "--images", str(generated), "--labels", str(generated / "labels.csv")]
    assert calibrate([*argv, "--concern", "malignant=mel+bcc+akiec:0.9", "--out", str(out)]) == 0
    manifest = read_manifest(demo_copy)
    block = manifest.raw["trust"]
    assert manifest.trust is not None and block["data"]["images"] == 140
    assert block["data"]["split"] == {
        "how": "stratified by class, seeded by image id", "seed": 0, "fit": 70, "report": 70,
    }  # fmt: skip
    concern = block["concerns"][0]
    assert concern["classes"] == ["mel", "bcc", "akiec"] and concern["fit"]["sensitivity"] >= 0.9
    assert concern["measured"]["positives"] == 30 and concern["measured"]["sensitivity_ci"]
    assert set(block["prediction_sets"]["thresholds"]) == set(manifest.codes)
    assert block["prediction_sets"]["mondrian"] == []  # 10 fit photographs a class: marginal
    for name in ("report.json", "report.md", "reliability.png"):
        assert (out / name).stat().st_size > 500, name
    assert "## Operating points" in (out / "report.md").read_text()


def test_calibrate_refuses_what_it_cannot_fit(demo_copy, generated, tmp_path, capsys):
    argv = [str(demo_copy), "--images", str(generated), "--labels", str(generated / "labels.csv")]
    assert calibrate([*argv, "--concern", "mel:0.9", "--no-record"]) == 0  # 20: enough
    capsys.readouterr()
    rows = (generated / "labels.csv").read_text().splitlines()[1:61]
    df = sum(row.endswith(",df") for row in rows)
    assert calibrate([*argv, "--concern", "df:0.9", "--limit", "60", "--no-record"]) == 2
    assert f"class of concern 'df' has {df} photographs; calibrate needs at least 20" in (
        capsys.readouterr().err
    )
    assert calibrate([*argv, "--concern", "cat:0.9"]) == 2
    assert "cat is not among the model's classes" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,dx\nSYN_0031_00000,melanoma\nSYN_0031_00001,seborrheic\n")
    assert calibrate([str(demo_copy), "--images", str(generated), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "labels not among the model's classes: melanoma, seborrheic" in err and "--map" in err
    assert "trust" not in json.loads((demo_copy / "manifest.json").read_text())


def test_a_manifest_without_a_block_serves_uncalibrated(demo_copy):
    from dermcam import service

    manifest = read_manifest(demo_copy)
    raw = np.array([0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1])
    probs, said = service.claims(manifest, raw)
    assert said["calibrated"] is False and "decision" not in said and "prediction_set" not in said
    assert "raw_probability" not in said["top"] and np.array_equal(probs, raw)


def test_the_committed_demo_is_calibrated_and_answers_a_decision(demo_model_dir):
    from dermcam import service

    manifest = read_manifest(demo_model_dir)
    assert manifest.trust is not None and manifest.summary()["calibrated"] is True
    raw = np.array([0.01, 0.01, 0.02, 0.01, 0.9, 0.04, 0.01])
    probs, said = service.claims(manifest, raw)
    assert said["top"]["code"] == "mel" and said["top"]["raw_probability"] == 0.9
    assert abs(sum(p["probability"] for p in said["predictions"]) - 1) < 1e-5
    assert said["decision"]["refer"] is True and said["decision"]["because"] in ("mel", "malignant")
    assert said["prediction_set"]["classes"][0] == "mel"
    assert said["prediction_set"]["coverage"] == 0.9
