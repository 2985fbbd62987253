"""docs/MODELS.md from the zoo's results: family × form × head → exported or why not."""

from __future__ import annotations

from collections import Counter


def _mb(value: int | None) -> str:
    return "–" if value is None else f"{value / 1e6:.1f}"


def _tier(row: dict, function: str) -> str:
    fit = (row.get("fit") or {}).get(function)
    if not fit:
        return "–"
    return f"{fit['tier_mb']} MiB" if fit.get("tier_mb") else "none ≤ 1 GiB"


def one_line(row: dict) -> str:
    if row["result"] != "exported":
        return f"{row['result']}: {row.get('reason', '')[:200]} ({row['export_s']} s)"
    p = row["parity"]
    return (
        f"exported, target {row['target']}, max|dp| {p['max_abs_prob_diff']:.1e}, "
        f"top-1 {p['top1_agreement']:.2f}, r {p['cam_pearson_min']:.5f} ({row['export_s']} s)"
    )


def _row(row: dict) -> str:
    name = f"{row['family']} | {row['form']} | {row['head']} | {row['size']} px"
    if row["result"] != "exported":
        reason = row.get("reason", "").replace("|", "/").replace("\n", " ")
        return f"| {name} | **{row['result']}** | – | – | – | – | – | – | – | {reason} |"
    p, sizes = row["parity"], row["bytes"]
    notes = []
    if row.get("skipped_targets"):
        notes.append(f"{len(row['skipped_targets'])} later target(s) need non-builtin ops")
    if p.get("tolerance"):
        notes.append(
            f"refused at the default 1e-4 (max abs Δp {p['max_abs_prob_diff']:.2e}, LiteRT's "
            f"own kernels differ by {p['kernel_prob_spread']:.2e}); exported with "
            f"--max-prob-diff {p['tolerance']['max_abs_prob_diff']:g}"
        )
    note = "; ".join(notes)
    return (
        f"| {name} | exported | `{row['target']}` {'×'.join(map(str, row['activations']))}"
        f" | {p['max_abs_prob_diff']:.2e} | {p['top1_agreement']:.0%}"
        f" | {p['cam_pearson_min']:.6f} / {p['cam_pp_pearson_min']:.6f}"
        f" | {_mb(sizes.get('predict'))} / {_mb(sizes.get('gradcam'))}"
        f" | {_tier(row, 'predict')} | {_tier(row, 'gradcam')} | {note} |"
    )


def _fit_coverage(rows: list[dict]) -> str:
    nested = [r for r in rows if r["result"] == "exported" and r["form"] == "nested"]
    checked = [r for r in nested if r.get("fit")]
    if len(checked) == len(nested):
        return "Every nested export went through the fit check."
    return (
        f"The fit check ran on {len(checked)} of {len(nested)} nested exports in this pass "
        "(–: not measured; `python -m bench.zoo` without `--no-fitcheck` adds the rest, about "
        "five minutes each here). What memory a model needs follows its artifact size; "
        "`make bench` measures real backbones at every configuration (bench/results.md)."
    )


def markdown(rows: list[dict]) -> str:
    counts = Counter(r["result"] for r in rows)
    families = {r["family"] for r in rows}
    exported_families = {r["family"] for r in rows if r["result"] == "exported"}
    lines = [
        "# The keras.applications zoo through the exporter",
        "",
        "Written by `make zoo` (`python -m bench.zoo`). Each model is built with "
        "`weights=None` (nothing can be downloaded here), its BatchNorm statistics calibrated "
        "on generated lesion images, saved as `.keras`, and exported with the parity gate "
        "(max |Δp| ≤ 1e-4, top-1 100 %, Grad-CAM map r ≥ 0.99 against TensorFlow's own "
        "GradientTape on 6 generated images, two classes each). **nested**: the backbone is "
        "one nested layer of a transfer-learning model (pooling, dropout, Dense head); "
        "**flat**: the family's own top (`include_top=True`). Sizes are the artifacts' "
        "(MB); tiers are the fit check's for the nested form: the smallest memory tier each "
        "function holds with a 20 % margin, real functions-framework servers in memory cgroups "
        "at a whole vCPU (the vCPU to deploy with is `make fitcheck`'s question; see "
        "docs/PERFORMANCE.md).",
        "",
        _fit_coverage(rows),
        "",
        f"{counts.get('exported', 0)} of {len(rows)} exports passed; "
        f"{len(exported_families)} of {len(families)} families export in at least one form.",
        "",
        "| family | form | head | input | result | target layer | max abs Δp | top-1 "
        "| map r (Grad-CAM / ++) | MB predict / gradcam | predict tier | gradcam tier | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(r) for r in rows]
    lines.append("")
    return "\n".join(lines)
