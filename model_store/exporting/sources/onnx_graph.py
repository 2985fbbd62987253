"""What the exporter needs to know of an ONNX file before converting it, and onnxruntime to run
it: one RGB image input in NCHW (PyTorch's layout), one classifier output, an opset onnx2tf
converts, and the spatial nodes a Grad-CAM can target. Anything else is refused with its
cause, before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MIN_OPSET = 13
# Ops that only move or reshape a feature map: never a target (their gradient is the same as
# their input's, and after conversion they are layout ops of onnx2tf's own).
LAYOUT_OPS = {
    "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Constant",
    "Shape", "Gather", "Slice", "Pad", "Cast", "Dropout",
}  # fmt: skip


@dataclass
class OnnxGraph:
    model: object  # onnx.ModelProto, the input fixed to [1, 3, H, W], shapes inferred
    input: str
    output: str
    height: int
    width: int
    _sessions: dict = field(default_factory=dict, repr=False)
    _simplified: object = field(default=None, repr=False)

    @classmethod
    def read(
        cls, path: Path, output: str | None = None, size: tuple[int, int] | None = None
    ) -> OnnxGraph:
        import onnx

        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
        except Exception as exc:  # DecodeError, ValidationError, OSError: not a usable file
            raise ValueError(f"{path} is not a valid ONNX model: {str(exc)[:200]}") from exc
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < MIN_OPSET:
            raise ValueError(f"{path}: opset {opset}; export with opset_version >= {MIN_OPSET}")
        graph = model.graph
        weights = {init.name for init in graph.initializer}
        inputs = [i for i in graph.input if i.name not in weights]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ValueError(
                f"{path} has {len(inputs)} inputs ({names}); dermcam serves ONNX models that "
                "take one image (export the image branch alone)"
            )
        image = inputs[0]
        dims = [d.dim_value if d.HasField("dim_value") else None for d in _dims(image)]
        height, width = _image_size(path, image.name, dims, size)
        outputs = [o.name for o in graph.output]
        if output is None and len(outputs) > 1:
            raise ValueError(
                f"{path} has {len(outputs)} outputs ({', '.join(outputs)}); name the "
                "classifier's with --output-layer"
            )
        chosen = output or outputs[0]
        if chosen not in outputs:
            raise ValueError(f"--output-layer {chosen!r} is not an output of {path}: {outputs}")
        kept = onnx.ValueInfoProto()
        kept.CopyFrom(next(o for o in graph.output if o.name == chosen))
        del graph.output[:]
        graph.output.append(kept)  # the classifier's only: onnx2tf converts what leads to it
        for d, value in zip(_dims(image), (1, 3, height, width), strict=True):
            d.Clear()
            d.dim_value = value
        model = onnx.shape_inference.infer_shapes(model)
        return cls(model, image.name, chosen, height, width)

    def save(self, path: Path, for_conversion: bool = False) -> None:
        """The graph as a file; `for_conversion`: constants folded by onnx-simplifier first
        (what onnx2tf itself would run, as a subprocess), which some exports need to convert,
        and Erf written in LiteRT builtins (`erf_as_polynomial`). A graph it cannot simplify
        (an op onnxruntime lacks) is saved as it is, for onnx2tf to judge."""
        import onnx

        model = erf_as_polynomial(self.simplified) if for_conversion else self.model
        onnx.save(model, str(path))

    @property
    def simplified(self):  # noqa: ANN201 - onnx.ModelProto
        """Constants folded by onnx-simplifier: shapes a padding computed at run time hid
        (timm's TF-"same" convolutions) become known, the padding joins its convolution."""
        if self._simplified is None:
            import onnxsim

            try:
                folded, checked = onnxsim.simplify(self.model)
            except Exception:  # noqa: BLE001 - onnx2tf then names what it cannot convert
                folded, checked = self.model, True
            self._simplified = folded if checked else self.model
        return self._simplified

    def run(self, nhwc: np.ndarray, tensors: list[str]) -> list[np.ndarray]:
        """onnxruntime on the file: the named tensors (any in the graph) for an NHWC batch."""
        key = tuple(tensors)
        if key not in self._sessions:
            self._sessions[key] = self._session(tensors)
        x = np.ascontiguousarray(np.transpose(nhwc, (0, 3, 1, 2)), dtype=np.float32)
        return self._sessions[key].run(list(tensors), {self.input: x})

    def _session(self, tensors: list[str]):  # noqa: ANN202
        import onnx
        import onnxruntime

        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        known = {o.name for o in model.graph.output}
        for name in tensors:
            if name not in known:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )


# Eigen's float erf (TensorFlow's and onnxruntime's CPU kernel): x clamped to [-4, 4], then an
# odd polynomial over an even one in x². Max error 4.2e-7 against math.erf (TensorFlow's own:
# 3.0e-7), checked in tests/test_export_onnx.py.
ERF_NUMERATOR = (
    -1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04,
    -5.69250639462346e-05, -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10,
)  # fmt: skip
ERF_DENOMINATOR = (
    -1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03,
    -2.13374055278905e-04, -1.45660718464996e-05,
)  # fmt: skip


def erf_as_polynomial(model):  # noqa: ANN001, ANN201 - onnx.ModelProto
    """Every Erf node (PyTorch's exact GELU: x/2 · (1 + erf(x/√2))) replaced by Eigen's
    rational approximation in Clip, Mul, Add and Div: LiteRT has no Erf builtin, and the
    TensorFlow GELU pattern the converter would fuse is not what onnx2tf emits for it."""
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Erf":
            nodes += _Polynomial(model.graph, node).nodes
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


class _Polynomial:
    """The nodes computing one Erf node's output from its input, named after it."""

    def __init__(self, graph, erf) -> None:  # noqa: ANN001
        self.graph, self.tag, self.nodes = graph, f"{erf.name or erf.output[0]}/poly", []
        x = self.op("Clip", [erf.input[0], self.const("lo", -4.0), self.const("hi", 4.0)], "x")
        self.x2 = self.op("Mul", [x, x], "x2")
        numerator = self.op("Mul", [x, self.horner(ERF_NUMERATOR, "p")], "p")
        self.op("Div", [numerator, self.horner(ERF_DENOMINATOR, "q")], None, erf.output[0])

    def const(self, name: str, value: float) -> str:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.array(value, np.float32), f"{self.tag}/{name}")
        self.graph.initializer.append(tensor)
        return tensor.name

    def op(self, kind: str, inputs: list[str], name: str | None, out: str | None = None) -> str:
        from onnx import helper

        out = out or f"{self.tag}/{name}"
        self.nodes.append(helper.make_node(kind, inputs, [out], name=f"{self.tag}/{name or kind}"))
        return out

    def horner(self, coefficients: tuple[float, ...], name: str) -> str:
        value = self.const(f"{name}{len(coefficients) - 1}", coefficients[-1])
        for i in range(len(coefficients) - 2, -1, -1):
            value = self.op("Mul", [self.x2, value], f"{name}m{i}")
            value = self.op(
                "Add", [value, self.const(f"{name}{i}", coefficients[i])], f"{name}a{i}"
            )
        return value


def spatial_nodes(model) -> list[tuple[str, str]]:  # noqa: ANN001
    """(node name, output tensor) of every node whose output is a [1, C, h, w] feature map
    with h × w > 1, in graph order (the last is nearest the classifier). Only tensors in the
    input's layout count: a block that permutes to channels last (ConvNeXt's MLP) has
    [1, h, w, C] tensors in between, which are not feature maps of C channels."""
    shapes = tensor_shapes(model)
    layouts = {model.graph.input[0].name: "NCHW"}
    found = []
    for node in model.graph.node:
        layout = _layout_after(node, layouts, shapes)
        for output in node.output:
            layouts[output] = layout
        if node.op_type in LAYOUT_OPS or not node.output or layout != "NCHW":
            continue
        dims = shapes.get(node.output[0])
        if dims and len(dims) == 4 and None not in dims and dims[2] * dims[3] > 1:
            found.append((node.name or node.output[0], node.output[0]))
    return found


def tensor_shapes(model) -> dict[str, list[int | None]]:  # noqa: ANN001
    """Every tensor's inferred shape, by name (None for a dimension known only at run time)."""
    shapes = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in _dims(info)]
    return shapes


# A tensor that came from an NCHW map by regrouping its channels only, the positions still its
# last two axes (ShuffleNet's channel shuffle: [1, C, h, w] → [1, g, C/g, h, w] → transposed →
# [1, C, h, w]): reshaped back to four axes, it is a feature map again.
REGROUPED = "N(C)HW"


def _layout_after(node, layouts: dict[str, str | None], shapes: dict) -> str | None:  # noqa: ANN001
    """NCHW or NHWC for a node's output from its inputs': a Transpose to or from channels last
    changes it, a reshape loses it unless it regroups channels only, anything else keeps its
    first input's."""
    known = [layouts[name] for name in node.input if layouts.get(name)]
    if not known:
        return None
    if node.op_type == "Transpose":
        perm = tuple(next((list(a.ints) for a in node.attribute if a.name == "perm"), ()))
        if (
            known[0] in ("NCHW", REGROUPED)
            and perm[:1] == (0,)
            and perm[-2:]
            == (
                len(perm) - 2,
                len(perm) - 1,
            )
        ):
            return known[0] if len(perm) > 4 else "NCHW" if perm == (0, 1, 2, 3) else None
        return {("NCHW", (0, 2, 3, 1)): "NHWC", ("NHWC", (0, 3, 1, 2)): "NCHW"}.get(
            (known[0], perm)
        )
    if node.op_type == "Reshape" and known[0] in ("NCHW", REGROUPED):
        before, after = shapes.get(node.input[0]) or [], shapes.get(node.output[0]) or []
        if len(before) >= 4 and len(after) >= 4 and before[-2:] == after[-2:] and after[0] == 1:
            return "NCHW" if len(after) == 4 else REGROUPED
        return None
    if node.op_type in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Gemm", "MatMul"):
        return None if node.op_type != "MatMul" or known[0] != "NHWC" else "NHWC"
    return known[0]


def _dims(info) -> list:  # noqa: ANN001
    return list(info.type.tensor_type.shape.dim)


def _image_size(
    path: Path, name: str, dims: list[int | None], size: tuple[int, int] | None
) -> tuple[int, int]:
    if len(dims) != 4:
        raise ValueError(f"{path}: input {name!r} has shape {dims}, not an image [N, 3, H, W]")
    channels = dims[1]
    if channels == 1:
        raise ValueError(f"{path}: input {name!r} is grayscale (1 channel); dermcam serves RGB")
    if channels != 3:
        where = " (channels last: export from PyTorch, which writes NCHW)" if dims[3] == 3 else ""
        raise ValueError(f"{path}: input {name!r} {dims} is not [N, 3, H, W]{where}")
    if size:
        return size
    if dims[2] is None or dims[3] is None:
        raise ValueError(f"{path}: input {name!r} has no fixed size; give --input-size")
    return dims[2], dims[3]
