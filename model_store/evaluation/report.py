"""The evaluation's report: markdown and JSON, a plot per metric, contact sheets of maps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dermcam import cam, render
from dermcam.rollout import ROLLOUTS
from model_store.evaluation.summary import LOCALISATION

# (picture at working size, mask or None) of an image id, for the contact sheets
Pictures = Callable[[str], tuple[Image.Image, np.ndarray | None]]
SHEET_ROWS = 6  # best and worst images per contact sheet


def _name(method: str) -> str:
    names = {**cam.NAMES, **ROLLOUTS, "scorecam": "Score-CAM (top-64)"}
    return names.get(method, method)


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(summary: dict) -> str:
    lines = [f"# Evaluation of {summary['model']['name']} {summary['model']['version']}", ""]
    lines.append(f"{summary['images']} images.")
    if summary.get("skipped"):
        why = ", ".join(f"{n} {k}" for k, n in summary["skipped"]["by_reason"].items())
        lines.append(f"{summary['skipped']['count']} more were skipped ({why}): see report.json.")
    if summary.get("metadata_used"):
        lines.append(f"The model takes patient metadata: {summary['metadata_used']}.")
    if summary.get("flat_rows"):
        lines.append(
            f"{len(summary['flat_rows'])} images have every row the same (degenerate thumbnails, "
            "no lesion): listed under `flat_rows` in report.json."
        )
    blank = {m: len(f["blank_maps"]) for m, f in summary["methods"].items() if f.get("blank_maps")}
    if blank:
        counts = ", ".join(
            f"{_name(m)} {n} ({100 * n / summary['images']:.1f} %)" for m, n in blank.items()
        )
        lines.append(
            f"Blank maps, zero everywhere (the method found no region that raised the class's "
            f"score; in localisation they count as misses): {counts}. Listed under `blank_maps` in "
            "report.json; Grad-CAM++ and LayerCAM weigh only positive gradients and rarely are."
        )
    c = summary.get("classification")
    if c:
        lines += [
            "",
            "## Classification",
            "",
            f"Accuracy {c['accuracy']:.3f}, balanced accuracy {_fmt(c['balanced_accuracy'])}, "
            f"macro ROC AUC (one vs rest) {_fmt(c['roc_auc_macro'])}.",
            "",
            "| class | recall | ROC AUC |",
            "|---|---|---|",
        ]
        for code, recall in c["recall"].items():
            lines.append(f"| {code} | {_fmt(recall)} | {_fmt(c['roc_auc'][code])} |")
        labels = c["confusion"]["labels"]
        lines += ["", "Confusion (rows: true, columns: predicted):", ""]
        lines.append("| | " + " | ".join(labels) + " |")
        lines.append("|---" * (len(labels) + 1) + "|")
        for code, row in zip(labels, c["confusion"]["rows_true_columns_predicted"], strict=True):
            lines.append(f"| {code} | " + " | ".join(map(str, row)) + " |")
    lines += _trust_lines(summary.get("trust"))
    if summary.get("baselines"):
        lines += [
            "",
            "## Localisation against the lesion masks",
            "",
            "Maps of the labelled class (the predicted one without labels), upsampled to the "
            "image. Each method beside two maps that never saw the image: a centred Gaussian "
            "(and the centre point for the pointing game) and a uniform map.",
            "",
            "| map | " + " | ".join(LOCALISATION) + " |",
            "|---" * (len(LOCALISATION) + 1) + "|",
        ]
        for name, figures in summary["baselines"].items():
            lines.append(
                f"| *{name} (baseline)* | "
                + " | ".join(_fmt(figures[k]) for k in LOCALISATION)
                + " |"
            )
        for method, figures in summary["methods"].items():
            lines.append(
                f"| {_name(method)} | "
                + " | ".join(_fmt(figures.get(k)) for k in LOCALISATION)
                + " |"
            )
    if summary.get("random_order"):
        lines += _faithfulness(summary)
    sanity = {m: f for m, f in summary["methods"].items() if "sanity_rank_correlation" in f}
    if sanity:
        lines += [
            "",
            "## Sanity check: the classifier's weights randomised",
            "",
            "Median rank correlation between each image's map before and after; a method whose "
            "maps barely change (≥ 0.8) is flagged: it explains the image more than the model.",
            "",
            "| method | rank correlation | flagged |",
            "|---|---|---|",
        ]
        for method, f in sanity.items():
            flag = "**yes**" if f["sanity_flag"] else "no"
            lines.append(f"| {_name(method)} | {f['sanity_rank_correlation']:.3f} | {flag} |")
    if summary.get("seconds_per_image"):
        lines += [
            "",
            "## Where the time went",
            "",
            "Seconds per image, by stage (deletion and insertion are `curves`; "
            "`--no-curves` leaves them out):",
            "",
            "| " + " | ".join(summary["seconds_per_image"]) + " |",
            "|---" * len(summary["seconds_per_image"]) + "|",
            "| " + " | ".join(f"{v:.3f}" for v in summary["seconds_per_image"].values()) + " |",
        ]
    return "\n".join(lines) + "\n"


def _faithfulness(summary: dict) -> list[str]:
    lines = [
        "",
        "## Faithfulness (no masks needed)",
        "",
        "Area under the predicted class's probability as the image's pixels are blurred away "
        "in the map's order (deletion: lower is better) or revealed into a blurred copy "
        "(insertion: higher is better), beside a random order.",
        "",
        "| order | deletion AUC | insertion AUC |",
        "|---|---|---|",
        f"| *random (baseline)* | {_fmt(summary['random_order']['deletion'])} | "
        f"{_fmt(summary['random_order']['insertion'])} |",
    ]
    for method, figures in summary["methods"].items():
        lines.append(
            f"| {_name(method)} | {_fmt(figures.get('deletion'))} | "
            f"{_fmt(figures.get('insertion'))} |"
        )
    return lines


def _plot(
    out: Path, metric: str, values: dict[str, float | None], baselines: dict[str, float]
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [_name(m) for m in values] + [f"{b} (baseline)" for b in baselines]
    heights = [v or 0.0 for v in values.values()] + list(baselines.values())
    colours = ["#1f5fbf"] * len(values) + ["#9aa5b4"] * len(baselines)
    fig, ax = plt.subplots(figsize=(7, 0.42 * len(names) + 1.2))
    ax.barh(names[::-1], heights[::-1], color=colours[::-1])
    ax.set_xlabel(metric)
    ax.set_xlim(0, max(1.0, max(heights) * 1.05))
    for y, h in enumerate(heights[::-1]):
        ax.text(h, y, f" {h:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{metric.replace('@', '_at_')}.png", dpi=110)
    plt.close(fig)


def _thumbnail(row: dict, method: str, pictures: Pictures, size: int = 160) -> Image.Image:
    picture, mask = pictures(row["id"])
    heat = render.heatmap_image(np.asarray(row["grids"][method], dtype=np.float32), *picture.size)
    shown = render.composite(picture, heat).resize((size, size))
    if mask is not None:
        outline = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size))
        edges = np.asarray(outline) > 127
        border = edges ^ np.roll(edges, 1, 0) | edges ^ np.roll(edges, 1, 1)
        pixels = np.asarray(shown).copy()
        pixels[border] = (255, 255, 255)
        shown = Image.fromarray(pixels)
    return shown


def contact_sheet(out: Path, rows: list[dict], method: str, pictures: Pictures) -> Path | None:
    """The best and worst maps by energy inside the mask, each over its photo, mask outlined."""
    scored = [r for r in rows if "energy_pointing_game" in r["methods"][method]]
    if not scored:
        return None
    scored.sort(key=lambda r: r["methods"][method]["energy_pointing_game"], reverse=True)
    rows = [scored[:SHEET_ROWS], scored[::-1][:SHEET_ROWS]]
    size, pad = 160, 22
    sheet = Image.new("RGB", (SHEET_ROWS * size, 2 * (size + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        draw.text((4, r * (size + pad) + 4), "best" if r == 0 else "worst", fill="black")
        for c, item in enumerate(row):
            y = r * (size + pad) + pad
            sheet.paste(_thumbnail(item, method, pictures, size), (c * size, y))
            energy = item["methods"][method]["energy_pointing_game"]
            draw.text(
                (c * size + 40, r * (size + pad) + 4),
                f"{item['id'][-12:]} {energy:.2f}",
                fill="black",
            )
    path = out / f"contact-sheet-{method}.png"
    sheet.save(path)
    return path


def write(
    out: Path, summary: dict, rows: list[dict], methods: list[str], pictures: Pictures
) -> None:
    per_image = [{k: v for k, v in row.items() if k != "grids"} for row in rows]
    (out / "report.json").write_text(
        json.dumps({"summary": summary, "images": per_image}, indent=2, default=float) + "\n"
    )
    (out / "report.md").write_text(markdown(summary))
    for metric in (*LOCALISATION, "deletion", "insertion"):
        values = {m: summary["methods"][m].get(metric) for m in methods}
        if all(v is None for v in values.values()):
            continue
        if metric in ("deletion", "insertion"):
            base = {"random": summary["random_order"][metric]}  # set whenever curves are
        else:
            base = {n: summary["baselines"][n][metric] for n in summary.get("baselines", {})}
        _plot(out, metric, values, base)
    for method in methods:
        contact_sheet(out, rows, method, pictures)


def _trust_lines(found: dict | None) -> list[str]:
    """What the functions would have answered, from the manifest's trust block."""
    if not found:
        return []
    declined = ", ".join(f"{n} {why}" for why, n in found["declined"].items()) or "none"
    lines = [
        "",
        "## What the functions would answer (trust block)",
        "",
        f"Of {found['images']} photographs, declined: {declined}; answered {found['answered']}.",
    ]
    if "referred" in found:
        lines.append(
            f"Referred at the operating point: {100 * found['referred']:.1f} % of those answered."
        )
    if "mean_set_size" in found:
        held = found.get("set_coverage")
        lines.append(
            f"Prediction sets: mean size {found['mean_set_size']:.2f}"
            + (
                f", held the true class {100 * held:.1f} % of the time."
                if held is not None
                else "."
            )
        )
    return lines
