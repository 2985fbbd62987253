"""The calibration report: report.json (the block, every photograph's raw and served
probabilities and which part it was in), report.md, and reliability.png (before and after)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_report(out: Path, found: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    block, data = found["block"], found["data"]
    rows = [
        {
            "id": image_id,
            "label": int(label),
            "part": "report" if held else "fit",
            "raw": [round(float(p), 6) for p in raw],
            "calibrated": [round(float(p), 6) for p in probs],
        }
        for image_id, label, held, raw, probs in zip(
            data["ids"], data["labels"], found["report_part"], found["raw"], found["probs"],
            strict=True,
        )
    ]  # fmt: skip
    body = {"trust": block, "degenerate": data["degenerate"], "skipped": data["skipped"]}
    (out / "report.json").write_text(json.dumps({**body, "images": rows}, indent=1) + "\n")
    (out / "report.md").write_text(markdown(block))
    reliability_png(out / "reliability.png", block["calibration"])


def _ci(ci: list[float] | None) -> str:
    return f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "n/a"


def markdown(block: dict) -> str:
    data, cal = block["data"], block["calibration"]
    before, after = cal["before"], cal["after"]
    counts = ", ".join(f"{k} {v}" for k, v in data["per_class"].items())
    lines = [
        f"# Calibration ({block['version']})",
        "",
        f"{data['images']} photographs ({counts}"
        f"; data set sha256 {data['sha256'][:16]}…), {data['left_out']['degenerate']} "
        f"degenerate and {data['left_out']['unreadable']} unreadable left out. Fitted on "
        f"{data['split']['fit']}, measured on the other {data['split']['report']} "
        f"({data['split']['how']}).",
        "",
        f"## Probabilities: temperature {cal['temperature']:.3f}",
        "",
        "| on the held-out part | ECE | MCE | Brier | NLL | mean top p | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in (("raw", before), ("calibrated", after)):
        lines.append(
            f"| {name} | {m['ece']} | {m['mce']} | {m['brier']} | {m['nll']} | "
            f"{m['mean_top_probability']} | {m['accuracy']} |"
        )
    lines += ["", f"ECE and MCE over {after['bins']} equal-width bins of the top probability."]
    if block["concerns"]:
        lines += [
            "",
            "## Operating points (threshold chosen on the fit part)",
            "",
            "| concern | classes | target | threshold | sensitivity (95 % CI) | "
            "specificity (95 % CI) | referred |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in block["concerns"]:
            m = c["measured"]
            lines.append(
                f"| {c['name']} | {'+'.join(c['classes'])} | {c['target_sensitivity']} | "
                f"{c['threshold']:.4f} | {m['sensitivity']} ({_ci(m['sensitivity_ci'])}, "
                f"{m['positives']} positives) | {m['specificity']} "
                f"({_ci(m['specificity_ci'])}, {m['negatives']} negatives) | {m['referred']} |"
            )
    sets = block.get("prediction_sets")
    if sets:
        m = sets["measured"]
        lines += [
            "",
            f"## Prediction sets: {sets['coverage']:.0%} coverage, {sets['score']}",
            "",
            f"Held out: coverage {m['coverage']} ({_ci(m['coverage_ci'])}), mean size "
            f"{m['mean_size']}. Classes with a threshold of their own (at least "
            f"{sets['mondrian_minimum']} calibration photographs): "
            f"{', '.join(sets['mondrian']) or 'none'}; the others share the marginal one.",
            "",
            "| class | held-out photographs | coverage |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['images']} | {v['coverage']} |" for k, v in m["per_class"].items()]
    return "\n".join(lines) + "\n"


def reliability_png(path: Path, calibration: dict) -> None:
    """Accuracy against confidence per bin, raw and calibrated, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, side in zip(axes, ("before", "after"), strict=True):
        m = calibration[side]
        table = m["reliability"]
        conf = np.array([b["confidence"] for b in table])
        acc = np.array([b["accuracy"] for b in table])
        sizes = np.array([b["images"] for b in table])
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
        ax.scatter(conf, acc, s=20 + 200 * sizes / max(1, sizes.max()), color="#b4452f")
        ax.plot(conf, acc, color="#b4452f", linewidth=1)
        title = "raw" if side == "before" else f"calibrated (T = {calibration['temperature']:.2f})"
        ax.set_title(f"{title}: ECE {m['ece']}")
        ax.set_xlabel("top probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
