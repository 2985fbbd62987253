"""model_store.evaluate on an ISIC-style folder (generated lesions, masks, labels), LiteRT
only; and the metrics it rests on, against figures worked out by hand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from model_store.evaluation import metrics
from model_store.synthetic import lesion_image, write_folder


def test_roc_auc_and_classification_by_hand():
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.8])
    positive = np.array([True, False, True, False, True])
    # positives 0.9, 0.4, 0.8 against negatives 0.8, 0.3: wins 2+1+(0.5+1)… = 4.5 of 6
    assert metrics.roc_auc(scores, positive) == pytest.approx(4.5 / 6)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    result = metrics.classification(probs, np.array([0, 1, 1, 1]), ["benign", "malignant"])
    assert result["accuracy"] == 0.75 and result["recall"] == {"benign": 1.0, "malignant": 0.6667}
    assert result["balanced_accuracy"] == pytest.approx(0.8333, abs=1e-4)
    assert result["confusion"]["rows_true_columns_predicted"] == [[1, 0], [1, 2]]


def test_roc_auc_counts_ties_half_as_scikit_learn_does():
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        scores = np.round(rng.random(n), int(rng.integers(0, 3)))  # 0-2 decimals: many ties
        positive = rng.random(n) < 0.4
        if positive.all() or not positive.any():
            assert metrics.roc_auc(scores, positive) is None
            continue
        want = roc_auc_score(positive, scores)
        assert metrics.roc_auc(scores, positive) == pytest.approx(want, abs=1e-12)


def test_localisation_and_its_baselines():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    saliency = np.zeros((10, 10))
    saliency[3, 3] = 1.0
    saliency[8, 8] = 1.0  # half the mass outside
    figures = metrics.localisation(saliency, mask)
    assert figures["pointing_game"] == 1.0 and figures["energy_pointing_game"] == 0.5
    assert figures["iou@0.8"] == pytest.approx(1 / 10)  # 2 pixels kept, 1 inside 9
    base = metrics.baselines(mask)
    assert base["uniform"]["energy_pointing_game"] == pytest.approx(0.09)
    assert base["uniform"]["pointing_game"] == 0.0  # the centre (5, 5) is outside


def test_deletion_and_insertion_follow_the_order():
    image = np.zeros((8, 8, 3))
    image[:2, :2] = 255  # the evidence: a bright corner

    def score(batch):
        return batch[:, :2, :2].mean(axis=(1, 2, 3)) / 255  # how much of the corner is left

    good = metrics.map_order(np.pad(np.ones((2, 2)), ((0, 6), (0, 6))))
    bad = good[::-1]
    assert metrics.perturbation_curves(image, good, score).deletion_auc < (
        metrics.perturbation_curves(image, bad, score).deletion_auc
    )
    assert metrics.perturbation_curves(image, good, score).insertion_auc > (
        metrics.perturbation_curves(image, bad, score).insertion_auc
    )


def test_spearman_rank_correlation():
    a = np.arange(16.0).reshape(4, 4)
    assert metrics.spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert metrics.spearman(a, -a) == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("isic"), seed=606, count=14, size=200)


def test_evaluate_a_folder_end_to_end(folder, demo_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(demo_model_dir, model)
    out = tmp_path / "report"
    command = [
        sys.executable,
        "-m",
        "model_store.evaluate",
        str(model),
        "--images",
        str(folder),
        "--labels",
        str(folder / "labels.csv"),
        "--sanity",
        "--record",
        "--out",
        str(out),
        "--methods",
        "gradcam,layercam,eigencam,scorecam",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "[14/14]" in done.stdout and "## Sanity check" in done.stdout
    report = json.loads((out / "report.json").read_text())
    summary = report["summary"]
    assert summary["images"] == 14 and summary["classification"]["accuracy"] > 0.8
    assert set(summary["methods"]) == {"gradcam", "layercam", "eigencam", "scorecam"}
    grad = summary["methods"]["gradcam"]
    # the demo's maps find synthetic lesions far better than maps that never saw the image
    assert grad["energy_pointing_game"] > 2 * summary["baselines"]["centre"]["energy_pointing_game"]
    assert grad["deletion"] < summary["random_order"]["deletion"]
    assert summary["methods"]["eigencam"]["sanity_flag"] is True  # no gradient: same map
    assert summary["methods"]["gradcam"]["sanity_flag"] is False
    for name in (
        "report.md",
        "energy_pointing_game.png",
        "deletion.png",
        "contact-sheet-gradcam.png",
    ):
        assert (out / name).stat().st_size > 1000
    # what the functions would have answered, from the demo's trust block, counted
    judged = summary["trust"]
    assert judged["images"] == 14 and judged["answered"] + sum(judged["declined"].values()) == 14
    assert 0.0 <= judged["set_coverage"] <= 1.0 and judged["mean_set_size"] >= 1.0
    assert "## What the functions would answer" in (out / "report.md").read_text()
    recorded = json.loads((model / "manifest.json").read_text())["evaluation"]["evaluate"]
    assert recorded["images"] == 14 and "gradcam" in recorded["methods"]
    # TensorFlow was never imported: LiteRT only
    probe = [
        sys.executable,
        "-c",
        "import sys, model_store.evaluate, model_store.evaluation.sanity, "
        "model_store.evaluation.report; print('tensorflow' in sys.modules)",
    ]
    assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "False"


def test_labels_by_name_with_a_map_and_unknown_ones_left_out(folder, demo_model_dir, tmp_path):
    from model_store.evaluation.folder import class_mapping, find_items, read_labels

    csv = tmp_path / "labels.csv"
    lines = (folder / "labels.csv").read_text().splitlines()
    renamed = [lines[0]] + [
        line.replace(",mel", ",melanoma").replace(",nv", ",nevus") for line in lines[1:]
    ]
    csv.write_text("\n".join([*renamed, "SYN_X,psoriasis"]) + "\n")
    codes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    labels = read_labels(csv, class_mapping(codes, "melanoma=mel,nevus=nv"))
    assert "SYN_X" not in labels and sorted(set(labels.values())) == list(range(7))
    items = find_items(folder, None, labels)
    assert len(items) == 14 and all(i.mask is not None for i in items)


def test_a_stopped_run_resumes_and_says_where_the_time_goes(folder, demo_model_dir, tmp_path):
    """Rows are on disk as they are made: a run killed part-way is resumed, not redone, and
    its summary equals one made in a single go."""
    from model_store.evaluation.evaluate import main

    out = tmp_path / "report"
    args = [str(demo_model_dir), "--images", str(folder), "--labels", str(folder / "labels.csv")]
    args += ["--methods", "gradcam", "--out", str(out)]
    assert main([*args, "--limit", "5"]) == 0
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"id": "cut-sho')  # a run killed while writing a row
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 14 and len({r["id"] for r in rows}) == 14
    resumed = json.loads((out / "report.json").read_text())["summary"]
    assert main([*args, "--fresh", "--out", str(tmp_path / "again")]) == 0
    fresh = json.loads((tmp_path / "again" / "report.json").read_text())["summary"]
    assert resumed["classification"] == fresh["classification"]
    assert resumed["methods"]["gradcam"]["deletion"] == fresh["methods"]["gradcam"]["deletion"]
    timing = fresh["seconds_per_image"]
    assert {"decode", "predict", "explain", "curves", "report"} <= set(timing)
    assert timing["curves"] > timing["predict"]  # deletion and insertion: the time sink
    assert "## Where the time went" in (out / "report.md").read_text()


def test_patient_fields_come_from_the_table(tmp_path):
    """The metadata demo evaluated with each image's own age and site, then with defaults."""
    import csv

    from conftest import ROOT
    from model_store.evaluation.evaluate import main
    from model_store.synthetic import lesion_image

    model = ROOT / "model_store" / "models" / "demo-metadata" / "1"
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(6):
        pixels, _ = lesion_image(seed=31, index=i, size=160, label=5)  # nevus-looking
        from PIL import Image

        Image.fromarray(pixels).save(images / f"p{i}.png")
        rows.append({"image_id": f"p{i}", "dx": "mel", "age_years": str(55 + i), "site": "trunk"})
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    base = [str(model), "--images", str(images), "--labels", str(tmp_path / "labels.csv")]
    base += ["--methods", "gradcam", "--no-curves"]
    assert main([*base, "--fields", "age=age_years,site", "--out", str(tmp_path / "with")]) == 0
    assert main([*base, "--out", str(tmp_path / "without")]) == 0
    with_fields = json.loads((tmp_path / "with" / "report.json").read_text())
    without = json.loads((tmp_path / "without" / "report.json").read_text())
    first = with_fields["images"][0]["metadata"]
    assert first["age"] == {"value": 55.0, "used": 55.0, "defaulted": False}
    assert first["site"]["used"] == "trunk" and first["sex"]["defaulted"] is True
    assert without["images"][0]["metadata"]["age"]["defaulted"] is True
    assert "age from column 'age_years'" in with_fields["summary"]["metadata_used"]
    # a nevus look on the trunk at 50 or older is a melanoma in this demo: the fields count
    mel = 4

    def p_mel(report: dict) -> float:
        return float(np.mean([r["probabilities"][mel] for r in report["images"]]))

    assert p_mel(with_fields) > p_mel(without) + 0.05
    assert main([*base, "--fields", "age=no_such_column", "--out", str(tmp_path / "x")]) == 2


def test_degenerate_thumbnails_are_listed():
    from PIL import Image

    from model_store.evaluation.per_image import flat_rows

    stripes = np.tile(np.arange(0, 250, dtype=np.uint8)[None, :, None], (250, 1, 3))
    assert flat_rows(Image.fromarray(stripes))
    assert not flat_rows(Image.fromarray(np.ascontiguousarray(stripes.transpose(1, 0, 2))))


def test_bad_images_are_skipped_with_their_reason_and_the_run_goes_on(
    demo_model_dir, tmp_path, faulty_folder
):
    """An undecodable image, one whose label the model lacks and one without its mask are
    reported as skipped, with why; everything else is evaluated."""
    from model_store.evaluation.evaluate import main

    images = faulty_folder(tmp_path / "images", seed=41, count=6)
    out = tmp_path / "report"
    argv = [str(demo_model_dir), "--images", str(images), "--labels", str(images / "labels.csv")]
    argv += ["--masks", str(images), "--methods", "gradcam", "--no-curves", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "report.json").read_text())["summary"]
    skipped = summary["skipped"]
    assert summary["images"] == 5 and skipped["count"] == 3
    assert skipped["by_reason"] == {
        "undecodable": 1,
        "label 'sarcoma' is not among the model's classes": 1,
        "missing mask": 1,
    }
    assert skipped["images"]["SYN_0041_00005"].startswith("missing mask")  # the last one's
    assert "3 more were skipped" in (out / "report.md").read_text()


def test_each_row_says_what_the_functions_would_answer(demo_model_dir):
    """A row's verdict is the served answer: calibrated top class, decision, set; a photograph
    the trust block's quality bounds decline is declined, with its reason and no class."""
    from PIL import Image

    from dermcam import trust
    from dermcam.manifest import read_manifest
    from model_store.evaluation.verdicts import summary, verdict

    manifest = read_manifest(demo_model_dir)
    codes = manifest.codes
    raw = np.full(len(codes), 0.1 / (len(codes) - 1))
    raw[2] = 0.9
    lesion = Image.fromarray(lesion_image(seed=3, index=0, size=200, label=2)[0])
    found = verdict(manifest, lesion, lesion.width, lesion.height, raw, None)
    served = trust.assess(manifest.trust, raw, codes)["probabilities"]
    assert found["abstain"] is None and found["top"] == codes[2]
    assert found["probability"] == pytest.approx(float(served[2]), abs=1e-6)
    assert codes[2] in found["prediction_set"]
    dark = Image.new("RGB", (300, 300), (20, 15, 10))
    declined = verdict(manifest, dark, 300, 300, raw, None)
    assert declined["abstain"] == "too dark"
    rows = [{"label": 2, "trust": found}, {"label": 0, "trust": declined}]
    counted = summary(rows, codes)
    assert counted["declined"] == {"too dark": 1} and counted["answered"] == 1
    assert counted["set_coverage"] == 1.0
