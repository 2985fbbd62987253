"""Vision transformers through ONNX, without torch: narrow timm ViT, DeiT (distilled: 2 prefix
tokens), a register ViT (5), Swin (channels-last stages, tokens in its MLP) and a Hugging Face
ViTForImageClassification, committed with
pytorch-grad-cam's own maps of four isic-uda1 photographs (made by
`python -m model_store.demos.torch_specimens fixtures`). Each exports with its tokens folded
into the patch grid at pytorch-grad-cam's layer, the prefix read from the model, and its
served maps are pytorch-grad-cam's; layouts that do not fold are refused with what to pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from test_export_onnx import (
    FIXTURES,
    LABELS,
    assert_the_gradient_is_the_onnx_graphs_own,
    export_fixture,
)

import numerics
from conftest import encode
from dermcam import cam
from dermcam.engine import LiteRTEngine
from dermcam.rollout import ROLLOUTS, rollout_map
from model_store.evaluation.evaluate import main as evaluate_main
from model_store.exporting.cli import main as export_main

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics

# fixture → the ONNX node pytorch-grad-cam's layer outputs (the .npz's `layer`)
TARGETS = {
    "vit-narrow": "/blocks/blocks.1/norm1/LayerNormalization",
    "deit-narrow": "/blocks/blocks.1/norm1/LayerNormalization",
    "vit-reg4-narrow": "/blocks/blocks.1/norm2/LayerNormalization",
    "swin-narrow": "/layers/layers.1/blocks/blocks.0/norm2/LayerNormalization",
    "hf-vit-narrow": "/model/vit/layers.1/layernorm_before/LayerNormalization",
}
# pytorch-grad-cam's maps vs the served ones at the grid: the same arithmetic in float32
# (measured: r rounds to 1.000000 on all 20 fixture photographs); the bar is 0.99.
MIN_R = 0.99


@pytest.fixture(scope="module", params=sorted(TARGETS))
def exported(request, tmp_path_factory):
    return export_fixture(request.param, tmp_path_factory)


def test_a_transformer_is_explained_at_pytorch_grad_cams_layer_folded_as_the_model_says(exported):
    name, out = exported
    manifest = LiteRTEngine(str(out)).manifest.raw
    reference = np.load(FIXTURES / f"{name}.npz")
    assert manifest["target_layer"] == TARGETS[name]
    fold = manifest["target_fold"]
    # the prefix and grid torch states (timm's num_prefix_tokens, the patch grid), not a guess
    assert fold["prefix_tokens"] == int(reference["prefix_tokens"])
    assert fold["grid"] == [int(d) for d in reference["grid"]]
    assert manifest["activations_shape"][:2] == fold["grid"]
    numerics.at_most("parity.max_abs_prob_diff", manifest["parity"]["max_abs_prob_diff"])
    original = manifest["parity"]["original"]
    numerics.at_most("parity.max_abs_prob_diff", original["max_abs_prob_diff"])
    assert original["top1_agreement"] == 1.0
    assert not any(op.startswith("Flex") for op in manifest["artifacts"]["gradcam"]["ops"])


def test_the_served_maps_are_pytorch_grad_cams(exported):
    name, out = exported
    lite = LiteRTEngine(str(out))
    reference = np.load(FIXTURES / f"{name}.npz")
    for image, k, theirs in zip(
        reference["images"], reference["classes"], reference["maps"], strict=True
    ):
        explained = lite.explain(image[None].astype(np.float32), int(k))
        ours = cam.class_map(explained.activations, explained.gradients)
        assert ours.shape == theirs.shape
        r = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
        assert r >= MIN_R, (name, int(k), r)


def test_the_served_gradient_is_the_token_sequences_own(exported):
    name, out = exported
    assert_the_gradient_is_the_onnx_graphs_own(FIXTURES / f"{name}.onnx", out)


def test_gradcam_serves_a_transformer(exported, single_function):
    name, out = exported
    if name != "vit-narrow":
        pytest.skip("one family over HTTP is enough: the function sees only a feature map")
    url, _ = single_function("gradcam", {"DERMCAM_MODEL_DIR": str(out)})
    photo = Image.fromarray(np.load(FIXTURES / f"{name}.npz")["images"][0])
    answer = requests.post(
        url, data=encode(photo, "PNG"), params={"class": "mel"},
        headers={"Content-Type": "image/png"}, timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["heatmap"]["grid"]) == 4


# --- attention rollout: the model's own attention, read out where its head reads ------------


def test_the_served_rollouts_are_the_torch_models_own(exported):
    """Both rollouts from the attention artifact against the same rollouts computed in torch
    from the model's attention probabilities and their gradients (`demos.torch_rollout`):
    measured r 1.000000 and |Δ| ≤ 1.2e-6 on all 16 fixture photographs; the bar is MIN_R."""
    name, out = exported
    reference = np.load(FIXTURES / f"{name}.npz")
    manifest = LiteRTEngine(str(out)).manifest.raw
    if "rollout" not in reference.files:  # Swin: windows, then merged stages
        assert manifest["attention"] is None and "attention" not in manifest["artifacts"]
        return
    layout = manifest["attention"]
    assert layout["prefix_tokens"] == int(reference["prefix_tokens"])
    assert layout["grid"] == [int(d) for d in reference["grid"]]
    assert len(layout["layers"]) == 2 and layout["heads"] == 2  # the fixtures' depth and heads
    numerics.at_most("attention.vs_original", layout["parity"]["max_attention_diff_vs_original"])
    numerics.at_least("attention.rollout_pearson", layout["parity"]["rollout_pearson_min"])
    lite = LiteRTEngine(str(out), ("attention",))
    for image, k, *theirs in zip(
        reference["images"], reference["classes"], reference["rollout"],
        reference["gradient_rollout"], strict=True,
    ):  # fmt: skip
        answer = lite.attend(image[None].astype(np.float32), int(k))
        for method, their in zip(ROLLOUTS, theirs, strict=True):
            ours = rollout_map(method, answer, layout["prefix_tokens"], tuple(layout["grid"]))
            r = np.corrcoef(ours.ravel(), their.ravel())[0, 1]
            assert r >= MIN_R, (name, method, int(k), r)


def test_evaluate_judges_the_rollouts_beside_grad_cam(exported, tmp_path, capsys):
    name, out = exported
    if name not in ("vit-narrow", "swin-narrow"):
        pytest.skip("one transformer with rollouts and one without are enough")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(np.load(FIXTURES / f"{name}.npz")["images"][:3]):
        Image.fromarray(image).save(folder / f"photo{i}.png")
    photos = ["--images", str(folder), "--out", str(tmp_path / "report"), "--fresh", "--sanity"]
    methods = ["--methods", "gradcam," + ",".join(ROLLOUTS)]
    code = evaluate_main([str(out), *photos, *methods])
    if name == "swin-narrow":  # no global attention: asked for, refused, saying why
        assert code == 2 and "attention artifact" in capsys.readouterr().err
        return
    assert code == 0
    report = (tmp_path / "report" / "report.json").read_text()
    summary = json.loads(report)["summary"]
    assert set(summary["methods"]) == {"gradcam", *ROLLOUTS}
    for figures in summary["methods"].values():
        assert 0.0 <= figures["deletion"] <= 1.0 and 0.0 <= figures["insertion"] <= 1.0
    # A class-token ViT's head reads token 0 alone, whatever its weights: plain rollout is
    # the same map for any classifier (ρ 1, flagged), as EigenCAM is; the gradient-weighted
    # one is checked too (its figure depends on the weights, so only that it is measured).
    assert summary["methods"]["rollout"]["sanity_flag"] is True
    assert summary["methods"]["gradient-rollout"]["sanity_flag"] in (True, False)
    assert "Gradient-weighted rollout" in (tmp_path / "report" / "report.md").read_text()


def test_a_layer_after_the_last_attention_is_refused_with_the_one_to_use(tmp_path, capsys):
    """After a class-token ViT's last attention only the class token reaches the head: the
    patches' gradient there is exactly zero, every map would be blank."""
    out = tmp_path / "out"
    code = export_main(
        [str(FIXTURES / "vit-narrow.onnx"), "--labels", LABELS, "--out", str(out),
         "--preprocess", "torch", "--no-fitcheck",
         "--target-layer", "/blocks/blocks.1/norm2/LayerNormalization"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "does not depend on its patch tokens" in err
    assert TARGETS["vit-narrow"] in err


# --- a token layout that does not fold: a hand-made transformer ------------------------------


def _pooled_tokens() -> bytes:
    """Patch embedding (4×4 grid, 8 channels) → tokens → a learnt pooling to 10 tokens (no
    grid of the model has 10 cells) → LayerNorm → a residual MLP → mean → logits."""
    rng = np.random.default_rng(0)
    w = {
        "patch": rng.normal(0, 0.3, (8, 3, 8, 8)), "shape": np.array([1, 8, 16]),
        "pool": rng.normal(0, 0.3, (10, 16)), "scale": np.ones(8), "bias": np.zeros(8),
        "mlp": rng.normal(0, 0.3, (8, 8)), "fc": rng.normal(0, 0.3, (8, 7)),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["input", "patch"], ["grid"], name="/patch", strides=[8, 8]),
        helper.make_node("Reshape", ["grid", "shape"], ["flat"], name="/flat"),
        helper.make_node("Transpose", ["flat"], ["tokens"], name="/tokens", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["pool", "tokens"], ["pooled"], name="/pool"),
        helper.make_node("LayerNormalization", ["pooled", "scale", "bias"], ["normed"],
                         name="/norm", axis=-1),
        helper.make_node("MatMul", ["normed", "mlp"], ["mixed"], name="/mlp"),
        helper.make_node("Add", ["pooled", "mixed"], ["block"], name="/residual"),
        helper.make_node("ReduceMean", ["block"], ["mean"], name="/mean", axes=[1], keepdims=0),
        helper.make_node("MatMul", ["mean", "fc"], ["logits"], name="/fc"),
    ]  # fmt: skip
    initializers = [
        numpy_helper.from_array(v.astype(np.int64 if k == "shape" else np.float32), k)
        for k, v in w.items()
    ]
    graph = helper.make_graph(
        nodes, "pooled",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 7])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model.SerializeToString()


def test_tokens_that_fold_into_no_grid_are_refused_naming_the_layer_and_the_flag(tmp_path, capsys):
    source = tmp_path / "pooled.onnx"
    source.write_bytes(_pooled_tokens())
    out = tmp_path / "out"
    code = export_main([str(source), "--labels", LABELS, "--out", str(out), "--no-fitcheck"])
    err = capsys.readouterr().err
    assert code != 0 and not out.exists()
    assert "/norm" in err and "10 tokens" in err
    assert "--prefix-tokens" in err and "--target-layer" in err


def test_prefix_tokens_given_fold_the_rest(tmp_path, capsys):
    """The user states 1 token before the patches: the other 9 are a 3×3 grid."""
    source = tmp_path / "pooled.onnx"
    source.write_bytes(_pooled_tokens())
    out = tmp_path / "out"
    argv = [str(source), "--labels", LABELS, "--out", str(out), "--no-fitcheck"]
    assert export_main([*argv, "--prefix-tokens", "1"]) == 0, capsys.readouterr().err
    manifest = LiteRTEngine(str(out)).manifest.raw
    assert manifest["target_layer"] == "/norm"
    assert manifest["target_fold"] == {"layout": "tokens", "prefix_tokens": 1, "grid": [3, 3]}
    assert_the_gradient_is_the_onnx_graphs_own(source, out, size=32)


def test_the_committed_transformer_fixtures_stay_small():
    files = [FIXTURES / f"{name}{ext}" for name in TARGETS for ext in (".onnx", ".npz")]
    assert sum(f.stat().st_size for f in files) <= 2e6
