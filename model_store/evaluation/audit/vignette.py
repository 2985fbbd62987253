"""Dark corners: a dermoscope's round field of view on a rectangular sensor, drawn from a
family of looks sampled per image: the circle's radius, whether it is centred (a dermoscope
held a little askew shifts it), how sharp its edge is, and its tone (black, a dark grey, or
the brown of a lens hood's shadow). The lesion always stays in view."""

from __future__ import annotations

import numpy as np

from model_store.evaluation.audit.canvas import Canvas, Family, pick

RADII = (0.95, 0.85, 0.75)  # the vignette's radius, × half the diagonal
VIGNETTE_TONES = {"black": (14.0, 12.0, 12.0), "grey": (58.0, 56.0, 56.0),
                  "brown": (46.0, 30.0, 22.0)}  # fmt: skip
VIGNETTE_EDGES = {"soft": 3.0, "sharp": 0.6, "wide": 9.0}  # the edge's width, % of the side


def vignette_look(rng: np.random.Generator, strength: float) -> dict:
    return {
        "radius": f"{RADII[int(rng.integers(len(RADII)))]:.2f} of the half-diagonal",
        "centre": pick(rng, ("centred", "off-centre")),
        "edge": pick(rng, list(VIGNETTE_EDGES)),
        "tone": pick(rng, list(VIGNETTE_TONES)),
    }


def _family_dark_corners(canvas: Canvas, look: dict) -> tuple[np.ndarray, np.ndarray]:
    """The vignette of the look."""
    w, h = canvas.size
    u, rng = canvas.unit, canvas.rng
    cx, cy = w / 2, h / 2
    if look["centre"] == "off-centre":
        heading = rng.uniform(0, 2 * np.pi)
        cx, cy = cx + 8 * u * np.cos(heading), cy + 8 * u * np.sin(heading)
    fraction = float(look["radius"].split()[0])
    fraction = 1 - (1 - fraction) * canvas.strength
    return _vignette(canvas, (cx, cy), fraction, VIGNETTE_EDGES[look["edge"]] * u,
                     VIGNETTE_TONES[look["tone"]])  # fmt: skip


def _vignette(
    canvas: Canvas,
    centre: tuple[float, float],
    fraction: float,
    edge: float,
    tone: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Darken outside a circle of `fraction` × the half-diagonal around `centre`, widened
    until the lesion is inside it."""
    w, h = canvas.size
    cx, cy = centre
    ys, xs = np.nonzero(canvas.lesion)
    needed = np.hypot(xs - cx, ys - cy).max() + 3 * canvas.unit if len(xs) else 0
    radius = max(fraction * np.hypot(w, h) / 2, needed)  # the lesion stays in view
    yy, xx = np.mgrid[0:h, 0:w]
    distance = np.hypot(xx + 0.5 - cx, yy + 0.5 - cy)
    alpha = np.clip((distance - radius) / max(edge, 0.5) + 0.5, 0, 1)
    noise = canvas.rng.normal(0, 3, (h, w, 1))
    dark = np.clip(np.array(tone) + noise, 0, 255)
    out = canvas.picture * (1 - alpha[..., None]) + dark * alpha[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8), alpha > 0.1


def _classic_dark_corners(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The audit's one vignette before the family: centred, black, a soft edge, its radius
    one of RADII (the dark-corners twin was trained on it)."""
    w, h = canvas.size
    fraction = RADII[int(canvas.rng.integers(len(RADII)))]
    canvas.look = {"radius": f"{fraction:.2f} of the half-diagonal"}
    fraction = 1 - (1 - fraction) * canvas.strength
    return _vignette(canvas, (w / 2, h / 2), fraction, 3 * canvas.unit, (14.0, 12.0, 12.0))


dark_corners = Family(vignette_look, _family_dark_corners, _classic_dark_corners)
