"""Per-image audit rows → per artefact: how far predictions move, how often the answer flips
(and whether towards or away from the malignant classes), what labelled figures do before and
after (with bootstrap 95 % intervals), how much of the map's attention lands on the artefact,
and a verdict from the thresholds below, never without them.

A verdict, per artefact, against the `identity` control (the same image only re-encoded: the
noise floor of these figures):
- `shortcut suspected` when the artefact moves the answers in one direction: the mean
  signed change of some class's probability (or of the malignant classes' together) is at
  least SHIFT = max(MIN_SHIFT, 3 × the identity's), or the net flips towards (or away from)
  the malignant classes are at least FLIPS = max(MIN_FLIPS, 3 × the identity's flip rate) and
  one-sided beyond a sign test (p < SIGN_TEST: 5 of 40 one way is not, 6 is), or,
  with labels, sensitivity, specificity or balanced accuracy changes by at least MIN_METRIC
  with a paired bootstrap 95 % interval that excludes no change;
- `no effect measured` otherwise. A sensitive model may move a lot in both directions (its
  mean |Δp| is reported) without a direction: that is not called a shortcut.
The maps' attention (energy share on the artefact ÷ its share of the image, ATTENTION or more)
is said beside the verdict, not made one: a map can look at ink the model ignores.
For `lesion-removed`: if the explained class's probability moves by less than SHIFT on
average, the model is not looking at the lesion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from model_store.evaluation.summary import skipped

MIN_SHIFT = 0.1
MIN_FLIPS = 0.1
MIN_METRIC = 0.1
ATTENTION = 1.5
BOOTSTRAP = 1000
SIGN_TEST = 0.05  # the flips' direction must pass a sign test at this level


def _stats(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(values.mean()), 4),
        "median": round(float(np.median(values)), 4),
        "p90": round(float(np.percentile(values, 90)), 4),
    }


def binary(probabilities: np.ndarray, positive: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(p of the positive classes together, top-1 is a positive class)."""
    return probabilities[:, positive].sum(axis=1), np.isin(probabilities.argmax(axis=1), positive)


def labelled_metrics(score: np.ndarray, called: np.ndarray, truth: np.ndarray) -> dict:
    from model_store.evaluation.metrics import roc_auc

    sens = called[truth].mean() if truth.any() else np.nan
    spec = (~called[~truth]).mean() if (~truth).any() else np.nan
    auc = roc_auc(score, truth)
    return {
        "sensitivity": float(sens),
        "specificity": float(spec),
        "balanced_accuracy": float(np.nanmean([sens, spec])),
        "auc": np.nan if auc is None else float(auc),
    }


def _interval(samples: list[float]) -> list[float] | None:
    clean = np.array([s for s in samples if not np.isnan(s)])
    if len(clean) < 20:
        return None
    return [round(float(np.percentile(clean, 2.5)), 4), round(float(np.percentile(clean, 97.5)), 4)]


def with_labels(
    before: np.ndarray, after: np.ndarray, labels: np.ndarray, positive: list[int], seed: int
) -> dict:
    """Sensitivity, specificity, balanced accuracy and AUC before and after, each with a
    bootstrap 95 % interval, and the paired interval of each change."""
    truth = np.isin(labels, positive)
    b_score, b_called = binary(before, positive)
    a_score, a_called = binary(after, positive)
    point_before = labelled_metrics(b_score, b_called, truth)
    point_after = labelled_metrics(a_score, a_called, truth)
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {
        k: {"before": [], "after": [], "change": []} for k in point_before
    }
    n = len(labels)
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, n, n)
        mb = labelled_metrics(b_score[pick], b_called[pick], truth[pick])
        ma = labelled_metrics(a_score[pick], a_called[pick], truth[pick])
        for k in point_before:
            draws[k]["before"].append(mb[k])
            draws[k]["after"].append(ma[k])
            draws[k]["change"].append(ma[k] - mb[k])
    found = {}
    for k in point_before:
        found[k] = {
            "before": _round(point_before[k]),
            "after": _round(point_after[k]),
            "before_ci": _interval(draws[k]["before"]),
            "after_ci": _interval(draws[k]["after"]),
            "change": _round(point_after[k] - point_before[k]),
            "change_ci": _interval(draws[k]["change"]),
        }
    return found


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def artefact_figures(
    rows: list[dict], name: str, positive: list[int], codes: list[str], seed: int
) -> dict:
    placed = [r for r in rows if r["artefacts"][name]["placed"]]
    figures: dict[str, Any] = {"images": len(placed), "not_placed": len(rows) - len(placed)}
    if not placed:
        return figures
    before = np.array([r["probabilities"] for r in placed], dtype=np.float64)
    after = np.array([r["artefacts"][name]["probabilities"] for r in placed], dtype=np.float64)
    delta = after - before
    figures["delta"] = {code: _stats(delta[:, i]) for i, code in enumerate(codes)}
    figures["mean_abs_delta"] = round(float(np.abs(delta).sum(axis=1).mean() / 2), 4)
    flips = before.argmax(1) != after.argmax(1)
    figures["flip_rate"] = round(float(flips.mean()), 4)
    targets = np.array([r["target"] for r in placed])
    figures["target_delta"] = _stats(delta[np.arange(len(placed)), targets])
    if positive:
        b_pos = np.isin(before.argmax(1), positive)
        a_pos = np.isin(after.argmax(1), positive)
        figures["positive_delta"] = _stats(delta[:, positive].sum(axis=1))
        figures["flips_towards_positive"] = round(float((~b_pos & a_pos).mean()), 4)
        figures["flips_away_from_positive"] = round(float((b_pos & ~a_pos).mean()), 4)
    attended = [r["artefacts"][name] for r in placed if "energy" in r["artefacts"][name]]
    if attended:
        energy = float(np.mean([a["energy"] for a in attended]))
        area = float(np.mean([a["area"] for a in attended]))
        figures["attention"] = {
            "energy_share": round(energy, 4),
            "area_share": round(area, 4),
            "ratio": round(energy / area, 2) if area > 0 else None,
            "max_on_artefact": round(float(np.mean([a["max_on"] for a in attended])), 4),
        }
    looks = look_figures(placed, name, delta, positive, targets, codes)
    if looks:
        figures["looks"] = looks
    served = referral_changes(placed, name)
    if served:
        figures["served"] = served
    labelled = [i for i, r in enumerate(placed) if r["label"] is not None]
    if positive and len(labelled) >= 10:
        labels = np.array([placed[i]["label"] for i in labelled])
        figures["labelled"] = with_labels(before[labelled], after[labelled], labels, positive, seed)
    return figures


MIN_LOOK_IMAGES = 3  # to be ranked
MIN_LOOK_VERDICT = 5  # to be a reason for a verdict
LOOK_NOISE = 0.01  # a change smaller than this counts neither up nor down


def look_figures(
    placed: list[dict],
    name: str,
    delta: np.ndarray,
    positive: list[int],
    targets: np.ndarray,
    codes: list[str] | None = None,
) -> dict | None:
    """For an artefact drawn in several looks (ink: per colour, mark and distance), how
    many images got it, the mean change of the malignant probability (or of the explained
    class's, without malignant classes) and the flips towards malignant, and the class whose
    probability the look moved most (a look can push one benign class up: violet ink, a
    dermatofibroma); and the look that moved the model most (by mean |change|, of those
    drawn on MIN_LOOK_IMAGES or more)."""
    looks = [r["artefacts"][name].get("look") for r in placed]
    if not any(looks):
        return None
    if positive:
        moved = delta[:, positive].sum(axis=1)
        before = np.array([np.argmax(r["probabilities"]) in positive for r in placed])
        after = np.array(
            [np.argmax(r["artefacts"][name]["probabilities"]) in positive for r in placed]
        )
        towards = ~before & after
    else:
        moved = delta[np.arange(len(placed)), targets]
        towards = np.zeros(len(placed), dtype=bool)
    by: dict[str, dict] = {}
    parts = sorted({k for look in looks if look for k, v in look.items() if isinstance(v, str)})
    for key in parts:  # the look's discrete parts (ink: colour, mark, distance), one by one
        values = sorted({str(look[key]) for look in looks if look and key in look})
        by[key] = {}
        for value in values:
            chosen = np.array([bool(look) and str(look.get(key)) == value for look in looks])
            by[key][value] = {
                "images": int(chosen.sum()),
                "mean_delta": round(float(moved[chosen].mean()), 4),
                "up": int((moved[chosen] > LOOK_NOISE).sum()),
                "down": int((moved[chosen] < -LOOK_NOISE).sum()),
                "flips_towards_positive": round(float(towards[chosen].mean()), 4),
            }
            if codes:
                by[key][value]["class_shift"] = _class_shift(delta[chosen], codes)
    ranked = [
        (abs(f["mean_delta"]), key, value)
        for key, values in by.items()
        for value, f in values.items()
        if f["images"] >= MIN_LOOK_IMAGES
    ]
    if ranked:
        _, key, value = max(ranked)
        by["most_moved"] = {"part": key, "value": value, **by[key][value]}
    return by


def _class_shift(delta: np.ndarray, codes: list[str]) -> dict:
    """The class whose probability moved most on average, how far, and how many images it
    moved up and down."""
    means = delta.mean(axis=0)
    k = int(np.argmax(np.abs(means)))
    return {
        "code": codes[k],
        "mean_delta": round(float(means[k]), 4),
        "up": int((delta[:, k] > LOOK_NOISE).sum()),
        "down": int((delta[:, k] < -LOOK_NOISE).sum()),
    }


def referral_changes(placed: list[dict], name: str) -> dict | None:
    """With a trust block: how often drawing the artefact changed what the functions would
    answer: the referral at the operating point, or a decline (the photograph screened out)."""
    pairs = [
        (r["trust"], r["artefacts"][name]["trust"])
        for r in placed
        if "trust" in r and "trust" in r["artefacts"][name]
    ]
    if not pairs:
        return None
    found: dict[str, Any] = {
        "images": len(pairs),
        "declined_after": round(float(np.mean([bool(a["abstain"]) for _, a in pairs])), 4),
    }
    both = [
        (b["refer"], a["refer"])
        for b, a in pairs
        if not b["abstain"] and not a["abstain"] and b["refer"] is not None
    ]
    if both:
        found["referred_before"] = round(float(np.mean([b for b, _ in both])), 4)
        found["now_referred"] = round(float(np.mean([a and not b for b, a in both])), 4)
        found["no_longer_referred"] = round(float(np.mean([b and not a for b, a in both])), 4)
    return found


def _systematic(figures: dict) -> tuple[float, str]:
    """The largest mean signed shift of one class (or of the malignant classes together)."""
    candidates = [(abs(s["mean"]), code, s["mean"]) for code, s in figures.get("delta", {}).items()]
    if "positive_delta" in figures:
        mean = figures["positive_delta"]["mean"]
        candidates.append((abs(mean), "the malignant classes", mean))
    if not candidates:
        return 0.0, ""
    size, where, signed = max(candidates)
    return size, f"{'towards' if signed > 0 else 'away from'} {where} ({signed:+.3f})"


def _significant(value: dict) -> bool:
    """A labelled figure's change at least MIN_METRIC, its interval excluding no change."""
    ci, change = value["change_ci"], value["change"]
    return bool(
        ci and change is not None and abs(change) >= MIN_METRIC and (ci[0] > 0 or ci[1] < 0)
    )


def _beyond_chance(figures: dict) -> bool:
    """Whether the flips' direction is more than a coin would give: two-sided exact sign test
    of the flips towards against those away, p < SIGN_TEST. Four answers of 40 that sat at
    0.5 and tipped one way (a clean model, Δp +0.04) are not a direction; 20 of 40 are."""
    images = figures.get("images", 0)
    towards = round(figures.get("flips_towards_positive", 0) * images)
    away = round(figures.get("flips_away_from_positive", 0) * images)
    return sign_test(towards, away) < SIGN_TEST


def sign_test(one_way: int, other_way: int) -> float:
    """Two-sided exact sign test: how likely a split this uneven is from a fair coin."""
    total, fewer = one_way + other_way, min(one_way, other_way)
    tail = sum(math.comb(total, k) for k in range(fewer + 1)) / 2**total
    return min(1.0, 2 * tail)


def _look_reason(figures: dict, shift: float) -> str | None:
    """A shortcut to one look (a pen's colour, a mark): of the looks drawn on MIN_LOOK_VERDICT
    images or more, the one that shifts the malignant probability most, when that is at
    least `shift` and most of its images move the same way (sign test, p < SIGN_TEST).
    Diluted among the other looks it can stay under the artefact's own threshold (a blue-pen
    shortcut: +0.57 on the blue images, +0.10 on all; a twin trained on violet rings: +0.21
    on the rings, +0.05 on all)."""
    found = []
    for part, values in (figures.get("looks") or {}).items():
        if part == "most_moved":
            continue
        for value, g in values.items():
            if g["images"] < MIN_LOOK_VERDICT:
                continue
            moved = [("the malignant probability", g)]
            if "class_shift" in g:  # one class pushed up or down, malignant or not
                moved.append((f"{g['class_shift']['code']}'s probability", g["class_shift"]))
            for what, m in moved:
                p = sign_test(m["up"], m["down"])
                if abs(m["mean_delta"]) >= shift and p < SIGN_TEST:
                    found.append((abs(m["mean_delta"]), part, value, what, m, g["images"], p))
    if not found:
        return None
    _, part, value, what, m, images, p = max(found, key=lambda f: f[0])
    return (
        f"drawn with {part} {value} it shifts {what} by {m['mean_delta']:+.3f} on {images} "
        f"images ({m['up']} up, {m['down']} down; sign test p {p:.3f})"
    )


def verdicts(summary: dict) -> dict[str, dict]:
    noise = summary["artefacts"]["identity"]
    noise_shift, _ = _systematic(noise)
    shift = max(MIN_SHIFT, 3 * noise_shift)
    flips = max(MIN_FLIPS, 3 * noise.get("flip_rate", 0.0))
    found = {}
    for name, figures in summary["artefacts"].items():
        if name == "identity" or not figures.get("images"):
            continue
        reasons = []
        size, where = _systematic(figures)
        if name == "lesion-removed":
            moved = abs(figures["target_delta"]["mean"])
            verdict = "relies on the lesion" if moved >= shift else "not looking at the lesion"
            found[name] = {
                "verdict": verdict,
                "reasons": [f"the explained class's probability moves by {moved:.3f} on average "
                            f"without the lesion (threshold {shift:.3f})"],
            }  # fmt: skip
            continue
        if size >= shift:
            reasons.append(f"shifts {where}: mean change at least {shift:.3f}")
        look = _look_reason(figures, shift)
        if look:
            reasons.append(look)
        net = figures.get("flips_towards_positive", 0) - figures.get("flips_away_from_positive", 0)
        if abs(net) >= flips and _beyond_chance(figures):
            side = "towards" if net > 0 else "away from"
            reasons.append(
                f"net {abs(net):.1%} of answers flip {side} the malignant classes "
                f"(threshold {flips:.1%})"
            )
        for metric, value in (figures.get("labelled") or {}).items():
            if metric != "auc" and _significant(value):
                ci = value["change_ci"]
                reasons.append(
                    f"{metric.replace('_', ' ')} {value['before']:.3f} → {value['after']:.3f} "
                    f"(change 95 % CI {ci[0]:+.3f} to {ci[1]:+.3f})"
                )
        attention = figures.get("attention") or {}
        looks = attention.get("ratio") is not None and attention["ratio"] >= ATTENTION
        found[name] = {
            "verdict": "shortcut suspected" if reasons else "no effect measured",
            "reasons": reasons,
            "maps_look_at_it": looks,
        }
    return {
        "thresholds": {
            "shift": round(shift, 4),
            "flips": round(flips, 4),
            "metric": MIN_METRIC,
            "attention": ATTENTION,
        },
        **found,
    }


def summarise(
    rows: list[dict], names: list[str], positive: list[int], codes: list[str], seed: int = 0
) -> dict:
    left = skipped(rows)
    rows = sorted((r for r in rows if "skipped" not in r), key=lambda r: r["id"])
    summary: dict[str, Any] = {
        "images": len(rows),
        **({"skipped": left} if left["count"] else {}),
        "positive": [codes[i] for i in positive],
        "lesion_masks": {
            how: sum(r["lesion"] == how for r in rows) for how in ("mask", "estimated")
        },
        "artefacts": {name: artefact_figures(rows, name, positive, codes, seed) for name in names},
    }
    summary["verdicts"] = verdicts(summary)
    seconds = [r["seconds"] for r in rows if "seconds" in r]
    passes = sum(r.get("passes", 0) for r in rows)
    if seconds:
        summary["speed"] = {
            "seconds_per_image": round(float(np.mean(seconds)), 3),
            "images_x_artefacts_per_second": round(
                len(rows) * len(names) / float(np.sum(seconds)), 2
            ),
            "explained_passes": passes,
        }
    return summary
