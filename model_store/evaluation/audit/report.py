"""The audit's report: report.md and report.json, a plot per figure, and per artefact a
contact sheet of the images it moved most (original | altered | map before | map after)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dermcam import render
from model_store.evaluation.audit import figures as audit_figures

SHEET_ROWS = 6
TILE = 150
# image id, artefact → (original picture, altered picture): made again for the sheets
Pictures = Callable[[str, str], tuple[np.ndarray, np.ndarray]]


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    model = summary["model"]
    v = summary["verdicts"]
    lines = [
        f"# Shortcut audit of {model['name']} {model['version']}",
        "",
        f"{summary['images']} images"
        + (
            f" ({summary['skipped']['count']} more skipped: see report.json)"
            if summary.get("skipped")
            else ""
        )
        + "; the explained class is "
        f"{summary.get('explained', 'the top class of the original')}; malignant classes: "
        f"{', '.join(summary['positive']) or 'none named'}. Lesion: "
        f"{summary['lesion_masks']['mask']} from masks, {summary['lesion_masks']['estimated']} "
        f"estimated ({summary['lesion_method']}). Artefacts drawn "
        + (
            "in their one classic drawing each (--looks classic)."
            if summary.get("looks") == "classic"
            else "from their families of looks, one sampled per image."
        ),
        "",
        "## Verdicts",
        "",
        f"Thresholds (from the identity control, the noise floor): a class's mean probability "
        f"shift ≥ {v['thresholds']['shift']:.3f}, net flips ≥ {v['thresholds']['flips']:.1%}, "
        f"a labelled figure changing ≥ {v['thresholds']['metric']:.2f} with a 95 % interval "
        f"excluding no change. Maps 'look at it' when the artefact's share of the map's energy "
        f"is ≥ {v['thresholds']['attention']}× its share of the image.",
        "",
        "| artefact | verdict | why | maps look at it |",
        "|---|---|---|---|",
    ]
    for name, found in v.items():
        if name == "thresholds":
            continue
        why = "; ".join(found["reasons"]) or "–"
        looks = {True: "yes", False: "no", None: "–"}[found.get("maps_look_at_it")]
        lines.append(f"| {name} | **{found['verdict']}** | {why} | {looks} |")
    lines += [
        "",
        "## Prediction shift",
        "",
        "| artefact | images | mean \\|Δp\\| | flip rate | Δp malignant (mean, median, p90) "
        "| flips towards / away | Δp explained class (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in summary["artefacts"].items():
        if not f.get("images"):
            lines.append(f"| {name} | 0 | – | – | – | – | – |")
            continue
        pos = f.get("positive_delta")
        pos_text = f"{pos['mean']:+.3f}, {pos['median']:+.3f}, {pos['p90']:+.3f}" if pos else "–"
        flips = (
            f"{f['flips_towards_positive']:.1%} / {f['flips_away_from_positive']:.1%}"
            if "flips_towards_positive" in f
            else "–"
        )
        lines.append(
            f"| {name} | {f['images']} | {f['mean_abs_delta']:.3f} | {f['flip_rate']:.1%} | "
            f"{pos_text} | {flips} | {f['target_delta']['mean']:+.3f} |"
        )
    lines += _looks(summary)
    lines += [
        "",
        "## Attention on the artefact",
        "",
        "| artefact | energy share | area share | ratio | map maximum on it |",
        "|---|---|---|---|---|",
    ]
    for name, f in summary["artefacts"].items():
        a = f.get("attention")
        if a:
            lines.append(
                f"| {name} | {a['energy_share']:.3f} | {a['area_share']:.3f} | "
                f"{_f(a['ratio'], 2)} | {a['max_on_artefact']:.1%} |"
            )
    served = {n: f["served"] for n, f in summary["artefacts"].items() if f.get("served")}
    if served:
        lines += [
            "",
            "## What the functions would answer (the manifest's trust block)",
            "",
            "| artefact | declined after | referred before | now referred | no longer referred |",
            "|---|---|---|---|---|",
        ]
        for name, f in served.items():
            lines.append(
                f"| {name} | {f['declined_after']:.1%} | {_pct(f.get('referred_before'))} | "
                f"{_pct(f.get('now_referred'))} | {_pct(f.get('no_longer_referred'))} |"
            )
    labelled = {n: f["labelled"] for n, f in summary["artefacts"].items() if f.get("labelled")}
    if labelled:
        lines += [
            "",
            "## With labels (malignant vs not; bootstrap 95 % intervals)",
            "",
            "| artefact | figure | before | after | change |",
            "|---|---|---|---|---|",
        ]
        for name, figures in labelled.items():
            for metric, m in figures.items():
                lines.append(
                    f"| {name} | {metric.replace('_', ' ')} | "
                    f"{_f(m['before'])} {_ci(m['before_ci'])} | "
                    f"{_f(m['after'])} {_ci(m['after_ci'])} | "
                    f"{_f(m['change'])} {_ci(m['change_ci'])} |"
                )
    speed = summary.get("speed")
    if speed:
        lines += [
            "",
            f"Speed: {speed['seconds_per_image']:.2f} s per image, "
            f"{speed['images_x_artefacts_per_second']:.2f} images × artefacts per second, "
            f"{speed['explained_passes']} explained passes.",
        ]
    lines += ["", "How to read this: docs/AUDIT.md."]
    return "\n".join(lines) + "\n"


def _looks(summary: dict) -> list[str]:
    """Per artefact drawn from a family of looks: which parts of the look moved it most."""
    lines = []
    for name, f in summary["artefacts"].items():
        looks = f.get("looks")
        if not looks:
            continue
        top = looks.get("most_moved")
        lines += [
            "",
            f"## {name}: the looks drawn, and which moved the model",
            "",
            "Each image's look is recorded (sampled from the artefact's family, seeded by the "
            "image; the ruler's side and the chart's corner where the lesion leaves room): "
            + (
                f"the one that moved the model most is **{top['part']} {top['value']}** "
                f"(mean Δp {top['mean_delta']:+.3f} over {top['images']} images)."
                if top
                else "none was drawn on enough images to compare."
            ),
            "",
            "| part | look | images | mean Δp | flips towards malignant | class moved most |",
            "|---|---|---|---|---|---|",
        ]
        for part, values in looks.items():
            if part == "most_moved":
                continue
            for value, g in sorted(values.items(), key=lambda kv: -abs(kv[1]["mean_delta"])):
                moved = g.get("class_shift")
                most = f"{moved['code']} {moved['mean_delta']:+.3f}" if moved else "–"
                lines.append(
                    f"| {part} | {value} | {g['images']} | {g['mean_delta']:+.3f} | "
                    f"{g['flips_towards_positive']:.1%} | {most} |"
                )
    return lines


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"({ci[0]:.3f}–{ci[1]:.3f})"


def _plot(
    out: Path,
    name: str,
    labels: list[str],
    values: list[float],
    lows: list[float] | None = None,
    highs: list[float] | None = None,
    xlabel: str = "",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.3))
    y = np.arange(len(labels))[::-1]
    error = None
    if lows is not None and highs is not None:
        error = [np.array(values) - np.array(lows), np.array(highs) - np.array(values)]
    ax.barh(y, values, xerr=error, color="#1f5fbf", ecolor="#555")
    ax.set_yticks(y, labels)
    ax.axvline(0, color="#999", linewidth=0.8)
    ax.set_xlabel(xlabel)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)


def plots(out: Path, summary: dict) -> None:
    arts = {n: f for n, f in summary["artefacts"].items() if f.get("images")}
    names = list(arts)
    if any("positive_delta" in f for f in arts.values()):
        pos = [arts[n].get("positive_delta", {"mean": 0, "median": 0, "p90": 0}) for n in names]
        _plot(
            out,
            "malignant-shift",
            names,
            [p["mean"] for p in pos],
            xlabel="mean Δp of the malignant classes (bar) and its median…p90",
        )
    _plot(
        out,
        "flip-rate",
        names,
        [arts[n]["flip_rate"] for n in names],
        xlabel="share of top-1 answers that flip",
    )
    attended = [n for n in names if arts[n].get("attention")]
    if attended:
        _plot(
            out,
            "attention",
            attended,
            [arts[n]["attention"]["ratio"] or 0 for n in attended],
            xlabel="artefact's share of the map's energy ÷ its share of the image",
        )
    labelled = [n for n in names if arts[n].get("labelled")]
    for metric in ("sensitivity", "specificity", "balanced_accuracy", "auc"):
        rows = [
            (n, arts[n]["labelled"][metric])
            for n in labelled
            if arts[n]["labelled"][metric]["change_ci"]
        ]
        if rows:
            _plot(
                out,
                f"change-{metric}",
                [n for n, _ in rows],
                [m["change"] for _, m in rows],
                [m["change_ci"][0] for _, m in rows],
                [m["change_ci"][1] for _, m in rows],
                f"change in {metric.replace('_', ' ')} (95 % bootstrap interval)",
            )


def contact_sheet(
    out: Path, rows: list[dict], name: str, positive: list[int], pictures: Pictures
) -> Path | None:
    """The images the artefact moved most: original | altered | map before | map after."""

    def moved(row: dict) -> float:
        before = np.array(row["probabilities"])
        after = np.array(row["artefacts"][name]["probabilities"])
        keep = positive or [row["target"]]
        return abs(float(after[keep].sum() - before[keep].sum()))

    placed = [r for r in rows if r["artefacts"][name]["placed"]]
    if not placed:
        return None
    chosen = sorted(placed, key=moved, reverse=True)[:SHEET_ROWS]
    pad = 18
    sheet = Image.new("RGB", (4 * TILE, len(chosen) * (TILE + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(chosen):
        original, changed = pictures(row["id"], name)
        before = render.composite(
            Image.fromarray(original),
            render.heatmap_image(
                np.asarray(row["grid"], np.float32), original.shape[1], original.shape[0]
            ),
        )
        after = render.composite(
            Image.fromarray(changed),
            render.heatmap_image(
                np.asarray(row["artefacts"][name]["grid"], np.float32),
                changed.shape[1],
                changed.shape[0],
            ),
        )
        y = i * (TILE + pad)
        for j, picture in enumerate(
            (Image.fromarray(original), Image.fromarray(changed), before, after)
        ):
            sheet.paste(picture.convert("RGB").resize((TILE, TILE)), (j * TILE, y + pad))
        draw.text(
            (4, y + 3),
            f"{row['id']}: Δp {moved(row):.3f} (original | {name} | map before | map after)",
            fill="black",
        )
    path = out / f"contact-sheet-{name}.png"
    sheet.save(path)
    return path


def write(
    out: Path,
    summary: dict,
    rows: list[dict],
    names: list[str],
    positive: list[int],
    pictures: Pictures,
) -> None:
    per_image = [
        {k: v for k, v in r.items() if k != "grid"}
        | {
            "artefacts": {
                n: {k: v for k, v in a.items() if k != "grid"} for n, a in r["artefacts"].items()
            }
        }
        for r in rows
    ]
    (out / "report.json").write_text(
        json.dumps({"summary": summary, "images": per_image}, indent=2) + "\n"
    )
    (out / "report.md").write_text(markdown(summary))
    plots(out, summary)
    for name in names:
        contact_sheet(out, rows, name, positive, pictures)


__all__ = ["audit_figures", "markdown", "write"]
