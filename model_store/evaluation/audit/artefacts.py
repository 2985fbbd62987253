"""The artefacts of dermoscopy that models have learnt as shortcuts, drawn procedurally (no
third-party templates), seeded, off the lesion, each with a strength in 0–1, and each drawn
from a family of looks sampled per image (a module each, whose artefact is a `canvas.Family`:
its sampler, its drawing and its classic drawing), so an audit is not a test of one drawing:

- `ink` (ink.py): skin-marker ink — violet, blue, black, red or green; a circle around the
  lesion, dots, an arrow, letters or a stroke; its width, opacity and distance from the
  lesion (Winkler et al. 2019: +~40 % false positives on nevi with gentian violet);
- `ruler` (ruler.py): clear, white, yellow or black plastic with millimetre ticks, or a
  printed scale bar; along the far edge, part of it, or turned by it; numbers or none
  (Winkler et al. 2021: the bar's type decides what it does);
- `dark-corners` (vignette.py): a dermoscope's round field of view: its radius, centred or
  not, a soft, sharp or wide edge, black, grey or brown (Pewton et al.);
- `hair` (hair.py): few to many; dark, black, blond or grey; fine or coarse; short or long;
  curved, straight or curly;
- `colour-patch` (chart.py): a colour checker, a grey-scale strip or round stickers, small or
  large, in the corner that covers least of the lesion (Nauta et al. 2022);
- `bubbles` (bubbles.py): immersion-gel bubbles, few to many, small or large, scattered or
  clustered, dark or bright rims (Katsch et al. 2022);

Each says the look it drew (`Canvas.look`), so the report can say which looks moved a
model; and two controls: `identity` (nothing drawn: the image only
decoded and re-encoded, its shift is the noise floor) and `lesion-removed` (the lesion filled
in from the skin around it: a model whose answer barely moves is not looking at the lesion).
Each returns the altered picture and the mask of the pixels it changed (for the share of
attention on them).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from model_store.evaluation.audit.bubbles import bubbles
from model_store.evaluation.audit.canvas import Artefact, Canvas
from model_store.evaluation.audit.chart import colour_patch
from model_store.evaluation.audit.hair import hair
from model_store.evaluation.audit.ink import CLASSIC_INK, ink
from model_store.evaluation.audit.lesion import box_blur, grow
from model_store.evaluation.audit.ruler import ruler
from model_store.evaluation.audit.vignette import dark_corners


def identity(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    return canvas.picture.copy(), np.zeros(canvas.lesion.shape, dtype=bool)


def lesion_removed(canvas: Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The lesion (grown a little) filled from the skin around it: a smooth fill solved at a
    coarse scale (each pixel the mean of its neighbours), then the skin's own fine texture."""
    region = grow(canvas.lesion, max(1, round(2 * canvas.unit)))
    if not region.any():
        return identity(canvas)
    picture = canvas.picture.astype(np.float64)
    fill = _harmonic(picture, region)
    texture = picture - np.stack([box_blur(picture[..., c], 2) for c in range(3)], axis=-1)
    shift = (int(canvas.rng.integers(-40, 41) * canvas.unit / 2), int(canvas.unit * 30))
    borrowed = np.roll(np.where(region[..., None], 0.0, texture), shift, axis=(0, 1))
    out = np.where(region[..., None], fill + borrowed, picture)
    return np.clip(np.round(out), 0, 255).astype(np.uint8), region


def _harmonic(picture: np.ndarray, region: np.ndarray, iterations: int = 400) -> np.ndarray:
    """The region's pixels as the average of their neighbours (Laplace), at quarter scale."""
    step = max(1, min(picture.shape[:2]) // 64)
    hole = region[::step, ::step]
    # The picture padded by its own edge (kept up to date), not padded afresh 400 times.
    padded = np.pad(picture[::step, ::step], ((1, 1), (1, 1), (0, 0)), mode="edge")
    small = padded[1:-1, 1:-1]  # a view
    small[hole] = picture[~region].mean(axis=0)
    mean, inside = np.empty_like(small), hole[..., None]
    for _ in range(iterations):
        padded[0], padded[-1] = padded[1], padded[-2]
        padded[:, 0], padded[:, -1] = padded[:, 1], padded[:, -2]
        np.add(padded[:-2, 1:-1], padded[2:, 1:-1], out=mean)
        mean += padded[1:-1, :-2]
        mean += padded[1:-1, 2:]
        mean /= 4
        np.copyto(small, mean, where=inside)
    big = np.stack(
        [
            np.asarray(Image.fromarray(small[..., c].astype(np.float32), "F").resize(
                (picture.shape[1], picture.shape[0]), Image.Resampling.BILINEAR))
            for c in range(3)
        ],
        axis=-1,
    )  # fmt: skip
    return big


ARTEFACTS: dict[str, Artefact] = {
    "ink": ink,
    "ruler": ruler,
    "dark-corners": dark_corners,
    "hair": hair,
    "colour-patch": colour_patch,
    "bubbles": bubbles,
}
CONTROLS: dict[str, Artefact] = {"identity": identity, "lesion-removed": lesion_removed}
# Each artefact's one drawing before the families (2026-12-07): the planted-shortcut twins
# were trained on these (model_store/demos/shortcuts.py), so their fixtures stay reproducible.
CLASSIC_LOOKS: dict[str, dict] = {
    name: CLASSIC_INK if name == "ink" else {"classic": True} for name in ARTEFACTS
}


def draw(
    name: str,
    picture: np.ndarray,
    lesion: np.ndarray,
    seed: int,
    strength: float = 1.0,
    look: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(altered picture, mask of what was drawn): the same seed always draws the same."""
    return draw_with_look(name, picture, lesion, seed, strength, look)[:2]


def draw_with_look(
    name: str,
    picture: np.ndarray,
    lesion: np.ndarray,
    seed: int,
    strength: float = 1.0,
    look: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """`draw`, and the look it drew (sampled from the artefact's family unless `look` is
    given; CLASSIC_LOOKS[name]: the one drawing of before the families)."""
    known = {**ARTEFACTS, **CONTROLS}
    if name not in known:
        raise ValueError(f"unknown artefact {name!r}; use: {', '.join(known)}")
    canvas = Canvas(picture, lesion, np.random.default_rng(seed), strength, dict(look or {}))
    changed, drawn = known[name](canvas)
    return changed, drawn, canvas.look
