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
from model_store.synthetic import write_folder


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
