"""Float checks that another CPU could round otherwise, each with a tolerance grounded in a
spread measured across CPU numerics.

TensorFlow's kernels (oneDNN picks AVX-512, AVX2 or SSE4.1 code at run time, or none with
TF_ENABLE_ONEDNN_OPTS=0), LiteRT's XNNPACK and onnxruntime sum in different orders on
different CPUs. A test that compares two of them names the figure (`close`, `at_most`,
`at_least`) and states its tolerance here, in `LIMITS`, beside the largest value measured by
`make test-numerics` (the numerics-sensitive tests under the default oneDNN, oneDNN held to
AVX2 and SSE4.1, and oneDNN off; tests/NUMERICS.md is its report). With DERMCAM_NUMERICS_LOG
set to a file, every check appends what it saw, so the report is remade from real runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Limit:
    bound: float
    kind: str  # "max": the figure must stay <= bound; "min": >= bound
    why: str  # what the figure is, and where the bound comes from


# Each bound against the largest spread measured (tests/NUMERICS.md, 2026-12-06: 4 numerics
# modes on AMD EPYC with AVX2; the failure that led here was seen on AVX-512). Headroom is
# >= 50x everywhere except three figures that sum through deep networks: the parity gate
# (5x: 2.0e-5 with oneDNN off; 1e-4 is the product's own promise, so it stays),
# litert_vs_tf.probabilities_deep (8x) and ham10000.served_vs_wheel (9x).
LIMITS = {
    # the exporter's parity gate (model_store/exporting/parity.py): what users are promised
    "parity.max_abs_prob_diff": Limit(1e-4, "max", "export gate: LiteRT vs TF probabilities"),
    "parity.cam_pearson_min": Limit(0.99, "min", "export gate: LiteRT vs TF heatmaps"),
    # LiteRT vs TensorFlow on the same float32 graph, probabilities in 0-1
    "litert_vs_tf.probabilities": Limit(1e-5, "max", "float32 rounding of two runtimes"),
    # the same through a keras.applications backbone (MobileNetV2 ... ResNet50): more sums
    "litert_vs_tf.probabilities_deep": Limit(1e-4, "max", "float32 rounding, deep networks"),
    # gradients at the target layer, relative to the largest gradient of the map
    "litert_vs_tf.gradients": Limit(1e-4, "max", "relative to max |gradient|"),
    "litert_vs_tf.map_pearson": Limit(0.999, "min", "heatmaps of the same graph"),
    # LiteRT on its own: the same artifact, two signatures or two instances
    "litert.same_graph": Limit(1e-6, "max", "deterministic for one artifact on one CPU"),
    # NumPy CAM arithmetic against TensorFlow's own (float64 here, float32 there)
    "cam_vs_tf.map": Limit(1e-3, "max", "maps scaled 0-1"),
    # Grad-CAM from LiteRT's gradients vs CAM from the Dense kernel (equal for GAP -> Dense)
    "litert_vs_exact.map": Limit(1e-4, "max", "maps scaled 0-1"),
    "cam_vs_tf.pearson": Limit(0.9999, "min", "same formula, two libraries"),
    # builtin-op gradients (model_store/exporting/graph/gradients.py) vs TF's own, relative
    # to the largest gradient; in TensorFlow, and converted to LiteRT
    "gradients.builtin_vs_tf": Limit(1e-5, "max", "relative to max |gradient|"),
    "gradients.litert_vs_tf": Limit(1e-5, "max", "relative to max |gradient|"),
    # the attention artifact's gate (model_store/exporting/attention.py): head-mean attention
    # vs onnxruntime on the file (measured <= 1.6e-7 on the fixtures, 8e-7 on a trained
    # 6-block ViT), rollout maps vs TensorFlow (1.0 on the fixtures; 0.997 on the trained
    # ViT with oneDNN on an AVX-512 machine, 2026-12-07)
    "attention.vs_original": Limit(1e-4, "max", "export gate: LiteRT vs onnxruntime, 0-1"),
    "attention.rollout_pearson": Limit(0.99, "min", "export gate: rollout maps vs TF"),
    # onnxruntime (the original) vs LiteRT (the export)
    "onnx.probabilities": Limit(1e-4, "max", "converted graph vs the original file"),
    "onnx.tiny_probabilities": Limit(1e-5, "max", "the same, one-layer graphs"),
    # the served HAM10000 model vs its wheel's own TensorFlow path, answers rounded to 1e-6
    "ham10000.served_vs_wheel": Limit(1e-4, "max", "TF decode+resize and Xception vs ours"),
}


def _record(name: str, observed: float) -> None:
    path = os.environ.get("DERMCAM_NUMERICS_LOG")
    if not path:
        return
    mode = os.environ.get("DERMCAM_NUMERICS_MODE", "default")
    with open(path, "a") as fh:
        fh.write(json.dumps({"name": name, "observed": observed, "mode": mode}) + "\n")


def at_most(name: str, observed: float) -> None:
    """`observed` (a difference) within the named tolerance."""
    limit = LIMITS[name]
    assert limit.kind == "max", name
    observed = float(observed)
    _record(name, observed)
    assert observed <= limit.bound, f"{name}: {observed:.3g} > {limit.bound:g} ({limit.why})"


def at_least(name: str, observed: float) -> None:
    """`observed` (an agreement, e.g. a correlation) at or above the named bound."""
    limit = LIMITS[name]
    assert limit.kind == "min", name
    observed = float(observed)
    _record(name, observed)
    assert observed >= limit.bound, f"{name}: {observed:.6g} < {limit.bound:g} ({limit.why})"


def close(name: str, got: np.ndarray, want: np.ndarray, scale: float | None = None) -> None:
    """max |got - want| (divided by `scale` when given) within the named tolerance."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    at_most(name, diff / scale if scale else diff)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _machine() -> str:
    """The CPU the figures come from: its model and the widest vector unit oneDNN can use."""
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        "an unknown CPU",
    )
    isa = "AVX-512" if " avx512f" in info else "AVX2" if " avx2" in info else "no AVX2"
    return f"{model} ({isa}, {os.cpu_count()} cores)"


def _cell(limit: Limit, value: float) -> str:
    if limit.kind == "min" and 0 < 1 - value < 1e-3:
        return f"1 - {1 - value:.2g}"
    return f"{value:.3g}"


def report(log: str) -> str:
    """tests/NUMERICS.md from a log of `make test-numerics`: per figure, its tolerance and
    the extreme value seen in each numerics mode."""
    rows: dict[str, dict[str, float]] = {}
    for line in open(log):
        entry = json.loads(line)
        limit = LIMITS[entry["name"]]
        seen = rows.setdefault(entry["name"], {})
        keep = max if limit.kind == "max" else min
        mode = entry["mode"]
        seen[mode] = keep(seen.get(mode, entry["observed"]), entry["observed"])
    modes = list(dict.fromkeys(json.loads(line)["mode"] for line in open(log)))
    lines = [
        "# Numerics: each tolerance beside the extreme seen under each oneDNN code path",
        "",
        "Made by `make test-numerics` (the tests marked `numerics`, once per mode). For a "
        "`max` figure the column shows the largest difference seen; for a `min` figure "
        "the lowest agreement (written 1 - d when within 1e-3 of 1). `headroom`: how far "
        "the worst mode stays from the bound "
        "(bound / worst for `max`, (1 - bound) / (1 - worst) for `min`).",
        "",
        f"Measured on {_machine()}.",
        "",
        "| figure | kind | bound | " + " | ".join(modes) + " | headroom | what |",
        "|---|---|---|" + "---|" * len(modes) + "---|---|",
    ]
    for name in sorted(rows):
        limit, seen = LIMITS[name], rows[name]
        if limit.kind == "max":
            worst = max(seen.values())
            headroom = limit.bound / worst if worst > 0 else float("inf")
        else:
            worst = min(seen.values())
            headroom = (1 - limit.bound) / (1 - worst) if worst < 1 else float("inf")
        cells = " | ".join(_cell(limit, seen[m]) if m in seen else "" for m in modes)
        room = (
            "exact"
            if headroom == float("inf")
            else ">10000x"
            if headroom > 1e4
            else f"{headroom:.0f}x"
        )
        lines.append(
            f"| `{name}` | {limit.kind} | {limit.bound:g} | {cells} | {room} | {limit.why} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(report(sys.argv[1]), end="")
