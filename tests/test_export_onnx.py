"""PyTorch models through ONNX, without torch: the committed fixtures (narrow timm and
torchvision networks exported by `torch.onnx.export`, made by
`python -m model_store.demos.torch_specimens fixtures`) exported through the CLI, held to
onnxruntime on the file itself, and served by both functions; ONNX files dermcam cannot serve
refused with their cause and nothing written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import numerics
from conftest import encode
from dermcam.engine import LiteRTEngine
from dermcam.keras_engine import preprocess
from model_store.exporting.cli import main as export_main
from model_store.exporting.sources.onnx_graph import OnnxGraph, erf_as_polynomial, spatial_nodes
from model_store.synthetic import CLASSES, dataset

# TensorFlow results: run again under other oneDNN code paths by make test-numerics
pytestmark = pytest.mark.numerics

FIXTURES = Path(__file__).parent / "fixtures" / "onnx"
LABELS = ",".join(code for code, _ in CLASSES)
# fixture → the ONNX node the automatic choice must land on (the last spatial feature map)
TARGETS = {
    "resnet-narrow": "/layer4/layer4.0/act2/Relu",
    "efficientnet-narrow": "/bn2/act/Mul",
    "mobilenetv3-narrow": "/features/features.16/features.16.2/HardSwish",
    "densenet-narrow": "/features/norm5/act/Relu",
}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def exported(request, tmp_path_factory):
    return export_fixture(request.param, tmp_path_factory)


def export_fixture(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A committed fixture through the CLI, as a user exports a PyTorch model."""
    out = tmp_path_factory.mktemp(name) / "model"
    argv = [str(FIXTURES / f"{name}.onnx"), "--labels", LABELS, "--out", str(out)]
    assert export_main([*argv, "--preprocess", "torch", "--no-fitcheck"]) == 0
    return name, out


def test_the_committed_fixtures_stay_small():
    sizes = [f.stat().st_size for f in FIXTURES.glob("*.onnx")]
    assert len(sizes) >= len(TARGETS) and sum(sizes) <= 10e6


def test_an_onnx_export_passes_both_gates_and_names_its_onnx_node(exported):
    name, out = exported
    manifest = LiteRTEngine(str(out)).manifest.raw
    assert manifest["target_layer"] == TARGETS[name]
    assert manifest["source"]["loader"] == "onnx"
    numerics.at_most("parity.max_abs_prob_diff", manifest["parity"]["max_abs_prob_diff"])
    original = manifest["parity"]["original"]
    assert original["runtime"].startswith("onnxruntime")
    numerics.at_most("parity.max_abs_prob_diff", original["max_abs_prob_diff"])
    assert original["top1_agreement"] == 1.0
    assert manifest["input"]["height"] == 64 and manifest["preprocessing"] == "torch"


def test_served_probabilities_equal_onnxruntime_on_the_file(exported):
    """Independently of the exporter's own gate: other images, the file read afresh."""
    name, out = exported
    lite = LiteRTEngine(str(out))
    graph = OnnxGraph.read(FIXTURES / f"{name}.onnx")
    images, _, _ = dataset(91, 4, 64)
    for image in images:
        tensor = image[None].astype(np.float32)
        (logits,) = graph.run(preprocess("torch", tensor).numpy(), [graph.output])
        z = logits[0] - logits[0].max()
        numerics.close("onnx.probabilities", lite.predict(tensor), np.exp(z) / np.exp(z).sum())


def test_the_served_gradient_is_the_onnx_graphs_own(exported):
    name, out = exported
    assert_the_gradient_is_the_onnx_graphs_own(FIXTURES / f"{name}.onnx", out)


def assert_the_gradient_is_the_onnx_graphs_own(source: Path, out: Path, size: int = 64) -> None:
    """The gradient the gradcam artifact returns, checked against onnxruntime: the ONNX graph
    with its target tensor fed from outside, run at A ± h·d, gives the directional derivative
    (s(A + h·d) − s(A − h·d)) / 2h that g · d must equal. A folded target (a transformer's
    tokens) is unfolded the other way: the served grid back into the token sequence, the
    prefix tokens the file's own."""
    lite = LiteRTEngine(str(out))
    graph = OnnxGraph.read(source)
    node = next(n for n in graph.model.graph.node if n.name == lite.manifest.raw["target_layer"])
    tensor = node.output[0]
    image = dataset(13, 1, size)[0][0][None].astype(np.float32)
    x = np.asarray(preprocess(lite.manifest.raw.get("preprocessing", "none"), image))
    own, logits = graph.run(x, [tensor, graph.output])
    session = _fed_from_outside(graph.model, tensor)
    fold = lite.manifest.raw.get("target_fold")

    def as_onnx(a: np.ndarray) -> np.ndarray:  # the served [h, w, C] → the ONNX tensor
        if fold is None:
            return np.transpose(a, (2, 0, 1))[None]
        if fold["layout"] == "channels_last":
            return a[None]
        tokens = own.copy()
        tokens[0, fold["prefix_tokens"] :] = a.reshape(-1, a.shape[-1])
        return tokens

    def score(a: np.ndarray, k: int) -> float:
        feed = {graph.input: np.transpose(x, (0, 3, 1, 2)), "dermcam_target": as_onnx(a)}
        return float(
            session.run([graph.output], {n: v.astype(np.float32) for n, v in feed.items()})[0][0, k]
        )

    k = int(np.argmax(lite.predict(image)))
    explained = lite.explain(image, k)
    a, g = explained.activations.astype(np.float64), explained.gradients.astype(np.float64)
    assert np.abs(g).max() > 0
    # the served activations are the ONNX graph's own: the graph run on them gives its logits
    np.testing.assert_allclose(score(a, k), logits[0, k], rtol=1e-4, atol=1e-4)
    direction = np.random.default_rng(1).normal(size=a.shape)
    h = 1e-2 * float(np.abs(a).max()) / float(np.abs(direction).max())
    numeric = (score(a + h * direction, k) - score(a - h * direction, k)) / (2 * h)
    analytic = float((g * direction).sum())
    assert abs(numeric - analytic) <= 0.02 * max(abs(analytic), 1e-3), (numeric, analytic)


def _fed_from_outside(model, tensor: str) -> onnxruntime.InferenceSession:  # noqa: ANN001
    """The graph with every reader of `tensor` reading a new input, `dermcam_target`."""
    fed = onnx.ModelProto()
    fed.CopyFrom(model)
    for node in fed.graph.node:
        for i, name in enumerate(node.input):
            if name == tensor:
                node.input[i] = "dermcam_target"
    fed.graph.input.append(helper.make_tensor_value_info("dermcam_target", TensorProto.FLOAT, None))
    return onnxruntime.InferenceSession(fed.SerializeToString(), providers=["CPUExecutionProvider"])


def test_both_functions_serve_an_onnx_export(exported, single_function):
    _, out = exported
    env = {"DERMCAM_MODEL_DIR": str(out)}
    image = dataset(5, 1, 200)[0][0]
    upload = encode(Image.fromarray(image), "PNG")
    predict_url, _ = single_function("predict", env, with_storage=False)
    answer = requests.post(predict_url, data=upload, headers={"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == len(CLASSES)
    gradcam_url, _ = single_function("gradcam", env)
    requests.get(gradcam_url, params={"warmup": "1"}, timeout=60)
    answer = requests.post(
        gradcam_url, data=upload, params={"class": "mel"}, headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["target"]["code"] == "mel"
    assert answer.json()["heatmap"]["stored"] and len(answer.json()["heatmap"]["grid"]) > 1


# --- ONNX files dermcam cannot serve: refused with the cause, nothing written -----------------


def _graph(
    inputs: list[tuple[str, list]],
    nodes: list,
    outputs: list[str],
    initializers: dict[str, np.ndarray],
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "specimen",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, OUTPUT_SHAPES[n]) for n in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in initializers.items()],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION
    )


IR_VERSION = (
    8  # what torch.onnx.export writes at opset 17 (onnx's default, 14, is newer than onnxruntime)
)
OUTPUT_SHAPES = {"logits": ["batch", 7], "meta_out": [1, 10], "features": ["batch", 8]}


def _tiny_cnn(channels: int = 3, extra: tuple = (), outputs: tuple = ("logits",), **kw):
    """Conv → Relu → global pool → Gemm: a PyTorch-shaped classifier made with onnx.helper."""
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.normal(0, 0.3, (8, channels, 3, 3)),
        "b": np.zeros(8),
        "fc": rng.normal(0, 0.3, (7, 8)),
        "fcb": np.zeros(7),
    }
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["conv"], name="/conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["act"], name="/act"),
        helper.make_node("GlobalAveragePool", ["act"], ["pool"], name="/pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="/flatten"),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"], name="/fc", transB=1),
        *extra,
    ]
    inputs = kw.pop("inputs", [("input", ["batch", channels, 32, 32])])
    return _graph(inputs, nodes, list(outputs), weights, **kw)


def _export(tmp_path: Path, model, capsys, *extra: str) -> tuple[int, str, Path]:
    source = tmp_path / "model.onnx"
    if isinstance(model, bytes):
        source.write_bytes(model)
    else:
        onnx.save(model, str(source))
    out = tmp_path / "out"
    code = export_main(
        [str(source), "--labels", LABELS, "--out", str(out), "--no-fitcheck", *extra]
    )
    return code, capsys.readouterr().err, out


def test_a_hand_made_onnx_classifier_exports(tmp_path, capsys):
    code, err, out = _export(tmp_path, _tiny_cnn(), capsys)
    assert code == 0, err
    assert LiteRTEngine(str(out)).manifest.raw["target_layer"] == "/act"


def test_padding_computed_at_run_time_still_leaves_a_target(tmp_path, capsys):
    """timm's TF-"same" convolutions (tf_efficientnet_*) pad by an amount computed from the
    input's shape: shape inference then knows no size after it, and only the simplified graph
    (the padding folded, what onnx2tf converts) shows the feature maps."""
    pad = [
        helper.make_node("Shape", ["input"], ["shape"], name="/pad/Shape"),
        helper.make_node("Slice", ["shape", "two", "three"], ["h"], name="/pad/Slice"),
        helper.make_node("Sub", ["h", "h_minus_one"], ["amount"], name="/pad/Sub"),
        helper.make_node("Concat", ["zeros", "amount", "amount"], ["pads"], axis=0, name="/pad/C"),
        helper.make_node("Pad", ["input", "pads"], ["padded"], name="/pad/Pad"),
    ]
    model = _tiny_cnn()
    conv = model.graph.node[0]
    conv.input[0] = "padded"
    del conv.attribute[:]  # its padding is the Pad's, after the input
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([*pad, *nodes])
    for name, value in (("two", [2]), ("three", [3]), ("h_minus_one", [31]), ("zeros", [0] * 6)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    code, err, out = _export(tmp_path, model, capsys)
    graph = OnnxGraph.read(tmp_path / "model.onnx")
    assert not spatial_nodes(graph.model) and spatial_nodes(graph.simplified)
    assert code == 0, err
    assert LiteRTEngine(str(out)).manifest.raw["target_layer"] == "/act"


def test_a_grouped_convolution_exports(tmp_path, capsys):
    """RegNet's and ResNeXt's grouped convolutions: onnx2tf holds their kernels in bare
    variables no layer tracks, which the converter freezes into the graph."""
    model = _tiny_cnn()
    grouped = helper.make_node(
        "Conv", ["act", "gw"], ["grouped"], name="/grouped", group=4, pads=[1, 1, 1, 1]
    )
    model.graph.node.insert(2, grouped)
    model.graph.node[3].input[0] = "grouped"  # the pool reads the grouped convolution
    weights = np.random.default_rng(1).normal(0, 0.3, (8, 2, 3, 3)).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(weights, "gw"))
    code, err, out = _export(tmp_path, model, capsys, "--preprocess", "torch")
    assert code == 0, err
    manifest = LiteRTEngine(str(out)).manifest.raw
    assert manifest["target_layer"] == "/grouped"
    numerics.at_most("onnx.tiny_probabilities", manifest["parity"]["original"]["max_abs_prob_diff"])


def test_exact_gelu_is_served_in_builtins(tmp_path, capsys):
    """PyTorch's exact GELU, x/2 · (1 + erf(x/√2)), as torch.onnx.export writes it: LiteRT has
    no Erf, so the exporter writes Eigen's polynomial; served = onnxruntime on the file."""
    gelu = [
        helper.make_node("Div", ["conv", "sqrt2"], ["scaled"], name="/gelu/Div"),
        helper.make_node("Erf", ["scaled"], ["erf"], name="/gelu/Erf"),
        helper.make_node("Add", ["erf", "one"], ["erf1"], name="/gelu/Add"),
        helper.make_node("Mul", ["conv", "erf1"], ["gx"], name="/gelu/Mul"),
        helper.make_node("Mul", ["gx", "half"], ["act"], name="/gelu/Mul_1"),
    ]
    model = _tiny_cnn()
    nodes = [n for n in model.graph.node if n.op_type != "Relu"]
    del model.graph.node[:]
    model.graph.node.extend([nodes[0], *gelu, *nodes[1:]])
    for name, value in (("sqrt2", 2**0.5), ("one", 1.0), ("half", 0.5)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    code, err, out = _export(tmp_path, model, capsys, "--preprocess", "torch")
    assert code == 0, err
    manifest = LiteRTEngine(str(out)).manifest.raw
    assert manifest["target_layer"] == "/gelu/Mul_1"
    assert "ERF" not in manifest["artifacts"]["gradcam"]["ops"]
    numerics.at_most("onnx.tiny_probabilities", manifest["parity"]["original"]["max_abs_prob_diff"])


def _after_the_target(model: onnx.ModelProto, nodes: list, ints: dict, floats: dict) -> None:
    """`nodes` read the target (/act, 8 channels) and end in "mixed", which the pool reads.
    Linear, so that the finite differences of the gradient check are exact."""
    graph = model.graph
    pool = next(n for n in graph.node if n.op_type == "GlobalAveragePool")
    pool.input[0] = "mixed"
    at = [n.op_type for n in graph.node].index("GlobalAveragePool")
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)
    for name, value in ints.items():
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    rng = np.random.default_rng(4)
    for name, shape in floats.items():
        value = rng.normal(0, 0.5, shape).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(value, name))


CHANNEL_SPLIT = (  # ShuffleNetV2's unit: split the channels, convolve one half, shuffle
    [
        helper.make_node("Split", ["act", "halves"], ["left", "right"], name="/split", axis=1),
        helper.make_node("Conv", ["right", "w1"], ["branch"], name="/branch/conv"),
        helper.make_node("Concat", ["left", "branch"], ["joined"], name="/cat", axis=1),
        helper.make_node("Reshape", ["joined", "groups"], ["grouped"], name="/shuffle/r1"),
        helper.make_node(
            "Transpose", ["grouped"], ["swapped"], name="/shuffle/t", perm=[0, 2, 1, 3, 4]
        ),
        helper.make_node("Reshape", ["swapped", "flat_shape"], ["mixed"], name="/shuffle/r2"),
    ],
    {"halves": [4, 4], "groups": [1, 2, 4, 32, 32], "flat_shape": [1, 8, 32, 32]},
    {"w1": (4, 4, 1, 1)},
)
STEPPED_SLICES = (  # even and odd channels (Slice with steps: a strided gradient)
    [
        helper.make_node("Slice", ["act", "s0", "end", "axis", "step"], ["even"], name="/even"),
        helper.make_node("Slice", ["act", "s1", "end", "axis", "step"], ["odd"], name="/odd"),
        helper.make_node("Conv", ["odd", "w1"], ["branch"], name="/branch/conv"),
        helper.make_node("Concat", ["even", "branch"], ["mixed"], name="/cat", axis=1),
    ],
    {"s0": [0], "s1": [1], "end": [8], "axis": [1], "step": [2]},
    {"w1": (4, 4, 1, 1)},
)


@pytest.mark.parametrize(
    "after", [CHANNEL_SPLIT, STEPPED_SLICES], ids=["channel-split", "stepped-slices"]
)
def test_a_target_before_a_slice_gets_its_gradient_in_builtins(tmp_path, capsys, after):
    """onnx2tf writes a strided slice for an equal Split and for every Slice; their gradient,
    StridedSliceGrad, is Flex-only. The exporter's rewrite (a PAD, or a GATHER for steps)
    serves a target before them, and the gradient is the ONNX graph's own."""
    model = _tiny_cnn()
    _after_the_target(model, *after)
    code, err, out = _export(tmp_path, model, capsys, "--target-layer", "/act")
    assert code == 0, err
    manifest = LiteRTEngine(str(out)).manifest.raw
    assert manifest["target_layer"] == "/act"
    assert not [op for op in manifest["artifacts"]["gradcam"]["ops"] if op.startswith("Flex")]
    numerics.at_most("onnx.tiny_probabilities", manifest["parity"]["original"]["max_abs_prob_diff"])
    numerics.at_least("parity.cam_pearson_min", manifest["parity"]["cam_pearson_min"])
    assert_the_gradient_is_the_onnx_graphs_own(tmp_path / "model.onnx", out, size=32)


def test_the_erf_polynomial_is_as_close_as_tensorflows_erf():
    x = np.linspace(-6, 6, 20001, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Erf", ["x"], ["y"], name="erf")],
        "erf",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.size])],
    )
    model = erf_as_polynomial(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    )
    assert {n.op_type for n in model.graph.node} == {"Clip", "Mul", "Add", "Div"}
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (y,) = session.run(None, {"x": x})
    exact = np.array([math.erf(float(v)) for v in x])
    assert np.abs(y - exact).max() <= 5e-7


SECOND_INPUT = helper.make_node("Identity", ["meta"], ["meta_out"], name="/meta")


@pytest.mark.parametrize(
    ("model", "extra", "cause"),
    [
        (
            _tiny_cnn(
                extra=(SECOND_INPUT,),
                outputs=("logits", "meta_out"),
                inputs=[("input", [1, 3, 32, 32]), ("meta", [1, 10])],
            ),
            (),
            "2 inputs (input, meta)",
        ),
        (
            _tiny_cnn(
                extra=(helper.make_node("Relu", ["flat"], ["features"]),),
                outputs=("logits", "features"),
            ),
            (),
            "name the classifier's with --output-layer",
        ),
        (_tiny_cnn(channels=1), (), "grayscale"),
        (_tiny_cnn(inputs=[("input", [1, 32, 32, 3])]), (), "channels last"),
        (_tiny_cnn(inputs=[("input", [1, 3, 32, 32])], opset=11), (), "opset 11"),
        (_tiny_cnn(inputs=[("input", ["n", 3, "h", "w"])]), (), "give --input-size"),
        (b"\x08\x07 this is not a protobuf", (), "is not a valid ONNX model"),
        (_tiny_cnn(), ("--output-layer", "nope"), "is not an output"),
    ],
    ids=[
        "several-inputs",
        "several-outputs",
        "grayscale",
        "nhwc",
        "old-opset",
        "dynamic-size",
        "corrupt",
        "unknown-output",
    ],
)
def test_what_cannot_be_served_is_refused_with_its_cause(tmp_path, capsys, model, extra, cause):
    code, err, out = _export(tmp_path, model, capsys, *extra)
    assert code != 0
    assert cause in err
    assert not out.exists()


def test_an_op_onnx2tf_cannot_convert_is_named(tmp_path, capsys):
    custom = helper.make_node("Relu6Custom", ["act"], ["act2"], name="/custom", domain="acme.ops")
    model = _tiny_cnn()
    model.graph.node.insert(2, custom)
    model.graph.node[3].input[0] = "act2"
    model.opset_import.append(helper.make_opsetid("acme.ops", 1))
    code, err, out = _export(tmp_path, model, capsys)
    assert code != 0
    assert "Relu6Custom" in err
    assert not out.exists()


def test_a_map_after_a_channel_shuffle_is_still_a_feature_map(tmp_path):
    """ShuffleNetV2 regroups its channels ([1, C, h, w] → [1, 2, C/2, h, w] → transposed →
    back): the positions stay the last two axes, so what follows is a feature map again and
    the automatic choice is the network's last map, not the first unit's."""
    model = _tiny_cnn()
    _after_the_target(model, *CHANNEL_SPLIT)
    pool = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    pool.input[0] = "shuffled"
    at = [n.op_type for n in model.graph.node].index("GlobalAveragePool")
    model.graph.node.insert(at, helper.make_node("Relu", ["mixed"], ["shuffled"], name="/after"))
    onnx.save(model, str(tmp_path / "shuffle.onnx"))
    names = [name for name, _ in spatial_nodes(OnnxGraph.read(tmp_path / "shuffle.onnx").model)]
    assert names[-1] == "/after" and "/cat" in names
