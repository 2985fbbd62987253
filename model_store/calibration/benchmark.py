"""How well does a model's scope rule tell dermoscopy from everything else? A benchmark.

    python -m model_store.calibration.benchmark MODEL_DIR --images DIR --labels CSV
        [--map melanoma=mel,nevus=nv] [--out DIR]

In scope: the labelled photographs' report part (the same split model_store.calibrate uses;
its fit part is the k-NN reference and fits the Mahalanobis statistics). Out of scope: real
photographs that ship inside registry packages (scikit-image's data, scikit-learn's and
Matplotlib's sample images: people and animals, objects and scenes, text and graphics,
medical images that are not of skin, textures), each also as four crops, plus the in-scope
photographs degraded (blurred, darkened, over-exposed, shrunk). Per score and per source:
AUROC, FPR at 95 % TPR (the share of that source accepted at the threshold that accepts 95 %
of in-scope photographs) and, for the rule as deployed (quality bounds, then the k-NN
threshold from the fit part), the share declined. Leave-one-source-out: the score is chosen
on the other sources and judged on the one left out, as we are judged on sources never seen.
Writes scope-benchmark.json and .md to --out.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from dermcam import imaging
from dermcam.engine import LiteRTEngine
from dermcam.inputs import image_input, model_inputs
from dermcam.quality import Bounds, measure
from dermcam.scope import knn_distances, normalised
from model_store.calibration.cli import collect, parse, split
from model_store.calibration.scope import K, conformal_threshold

# kind → (package, file) of photographs the registries ship; none is a skin lesion
SOURCES = {
    "people and animals": [
        ("skimage", "astronaut.png"),
        ("skimage", "chelsea.png"),
        ("skimage", "camera.png"),
        ("skimage", "horse.png"),
        ("matplotlib", "grace_hopper.jpg"),
    ],
    "objects and scenes": [
        ("skimage", "coffee.png"),
        ("skimage", "rocket.jpg"),
        ("skimage", "motorcycle_left.png"),
        ("skimage", "hubble_deep_field.jpg"),
        ("skimage", "moon.png"),
        ("skimage", "clock_motion.png"),
        ("sklearn", "china.jpg"),
        ("sklearn", "flower.jpg"),
    ],
    "text and graphics": [
        ("skimage", "page.png"),
        ("skimage", "text.png"),
        ("skimage", "logo.png"),
        ("skimage", "color.png"),
        ("skimage", "chessboard_RGB.png"),
        ("matplotlib", "logo2.png"),
    ],
    "medical, not skin": [
        ("skimage", "retina.jpg"),
        ("skimage", "microaneurysms.png"),
        ("skimage", "ihc.png"),
        ("skimage", "cell.png"),
        ("skimage", "phantom.png"),
    ],
    "textures": [("skimage", "brick.png"), ("skimage", "grass.png"), ("skimage", "gravel.png")],
}
DEGRADED = {
    "blurred": lambda im: im.filter(ImageFilter.GaussianBlur(4 * max(im.size) / 250)),
    "dark": lambda im: ImageEnhance.Brightness(im).enhance(0.2),
    "over-exposed": lambda im: ImageEnhance.Brightness(im).enhance(3.0),
    "too small": lambda im: im.resize((48, 48), Image.BILINEAR),
}
TPR = 0.95
MAX_PIXELS = 40_000_000


def package_file(package: str, name: str) -> Path:
    if package == "skimage":
        import skimage

        return Path(skimage.__file__).parent / "data" / name
    if package == "sklearn":
        import sklearn.datasets

        return Path(sklearn.datasets.__file__).parent / "images" / name
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / name


def crops(image: Image.Image) -> list[Image.Image]:
    """The photograph and four overlapping crops (each 60 % of a side, at the corners)."""
    w, h = image.size
    cw, ch = int(w * 0.6), int(h * 0.6)
    boxes = [(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)]
    return [image, *(image.crop((x, y, x + cw, y + ch)) for x, y in boxes)]


def observe(engine: LiteRTEngine, image: Image.Image):  # noqa: ANN201
    """Raw probabilities, pooled features and quality figures of one photograph, through the
    functions' own decode of it sent as a PNG upload."""
    decoded = imaging.decode(_png(image.convert("RGB")), MAX_PIXELS, image_input(engine.manifest))
    inputs = model_inputs(engine.manifest, decoded, {})
    seen = engine.observe(inputs.image, inputs.extras)
    return seen.probabilities, seen.features, measure(decoded.image, decoded.width, decoded.height)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an out-of-scope score > an in-scope one), ties half: the Mann-Whitney AUROC."""
    inside, outside = np.asarray(inside), np.asarray(outside)
    greater = (outside[:, None] > inside[None, :]).mean()
    ties = (outside[:, None] == inside[None, :]).mean()
    return float(greater + 0.5 * ties)


def fpr_at_tpr(inside: np.ndarray, outside: np.ndarray, tpr: float = TPR) -> float:
    """The share of out-of-scope photographs accepted at the threshold accepting `tpr` of
    the in-scope ones (scores: higher = less like the model's photographs)."""
    return float((np.asarray(outside) <= np.quantile(inside, tpr)).mean())


class Scores:
    """Out-of-scope scores fitted on the fit part's features and probabilities."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, dims: int = 32) -> None:
        self.reference = normalised(features)
        self.raw_reference = np.asarray(features, dtype=np.float64)
        self.mean = self.raw_reference.mean(axis=0)
        centred = self.raw_reference - self.mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        self.basis = vt[: min(dims, len(vt))].T
        projected = centred @ self.basis
        self.class_means = {k: projected[labels == k].mean(axis=0) for k in np.unique(labels)}
        within = np.concatenate([projected[labels == k] - m for k, m in self.class_means.items()])
        covariance = np.cov(within, rowvar=False)
        shrink = 0.1 * np.trace(covariance) / len(covariance)  # a fixed ridge, stated
        self.precision = np.linalg.inv(covariance + shrink * np.eye(len(covariance)))

    def all(self, probs: np.ndarray, features: np.ndarray) -> dict[str, np.ndarray]:
        projected = (np.asarray(features, dtype=np.float64) - self.mean) @ self.basis
        mahalanobis = np.min(
            [
                np.einsum("ij,jk,ik->i", projected - m, self.precision, projected - m)
                for m in self.class_means.values()
            ],
            axis=0,
        )
        raw = np.asarray(features, dtype=np.float64)
        euclid = np.sqrt(((raw[:, None, :] - self.raw_reference[None]) ** 2).sum(-1))
        return {
            "max-softmax": 1.0 - np.asarray(probs).max(axis=1),
            f"knn-cosine (k={K})": knn_distances(self.reference, normalised(features), K),
            f"knn-euclidean (k={K})": np.sort(euclid, axis=1)[:, K - 1],
            "mahalanobis (32 PCs)": mahalanobis,
        }


def run(argv: list[str]) -> dict:
    args = parse([*argv, "--no-record"])
    engine = LiteRTEngine(args.model_dir, artifacts=("predict",))
    if not engine.returns_features:  # exported before `features`: pooled from the CAM graph
        engine = LiteRTEngine(args.model_dir, artifacts=("gradcam",))
    data = collect(args, engine)
    report = split(data["ids"], data["labels"], args.report_fraction, args.seed)
    fit_part = ~report
    scores = Scores(data["features"][fit_part], data["labels"][fit_part])
    inside = scores.all(data["raw"][report], data["features"][report])
    knn_name = f"knn-cosine (k={K})"
    deployed = conformal_threshold(
        knn_distances(scores.reference, scores.reference, K, leave_one_out=True), TPR
    )
    bounds = Bounds()

    images: dict[str, list[tuple[str, Image.Image]]] = {}
    digest = hashlib.sha256()
    for kind, files in SOURCES.items():
        for package, name in files:
            path = package_file(package, name)
            digest.update(
                f"{package}/{name}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode()
            )
            photo = Image.open(path).convert("RGB")
            images.setdefault(kind, []).extend(
                (f"{package}/{name}#{i}", c) for i, c in enumerate(crops(photo))
            )
    report_ids = [i for i, r in zip(data["ids"], report, strict=True) if r]
    folder = Path(args.images)
    for kind, degrade in DEGRADED.items():
        for image_id in report_ids[::4]:
            path = next(folder.glob(f"{image_id}.*"))
            images.setdefault(f"degraded: {kind}", []).append(
                (image_id, degrade(Image.open(path).convert("RGB")))
            )

    results: dict[str, dict] = {}
    for kind, items in images.items():
        probs, feats, declined_quality = [], [], []
        for _, image in items:
            p, f, quality = observe(engine, image)
            probs.append(p)
            feats.append(f)
            declined_quality.append(quality.problem(bounds) is not None)
        outside = scores.all(np.array(probs), np.array(feats))
        quality_mask = np.array(declined_quality)
        results[kind] = {
            "images": len(items),
            "photographs": len({i.split("#")[0] for i, _ in items}),
            "scores": {
                name: {
                    "auroc": round(auroc(inside[name], outside[name]), 4),
                    "fpr_at_95_tpr": round(fpr_at_tpr(inside[name], outside[name]), 4),
                }
                for name in inside
            },
            "declined": {
                "quality": round(float(quality_mask.mean()), 4),
                "rule": round(float((quality_mask | (outside[knn_name] > deployed)).mean()), 4),
            },
        }
    loso = {}
    for held in results:
        others = [k for k in results if k != held]
        chosen = max(
            inside, key=lambda n: np.mean([results[k]["scores"][n]["auroc"] for k in others])
        )
        loso[held] = {"chosen": chosen, "auroc": results[held]["scores"][chosen]["auroc"]}
    return {
        "model": engine.manifest.summary(),
        "in_scope": {
            "images": int(report.sum()),
            "fit": int(fit_part.sum()),
            "data_sha256": data["sha256"],
            "accepted_by_rule": round(float((inside[knn_name] <= deployed).mean()), 4),
        },
        "out_of_scope_sha256": digest.hexdigest(),
        "deployed": {
            "score": knn_name,
            "threshold": round(deployed, 6),
            "acceptance": TPR,
            "quality": bounds.block(),
        },
        "sources": results,
        "leave_one_source_out": loso,
    }


def markdown(found: dict) -> str:
    names = list(next(iter(found["sources"].values()))["scores"])
    lines = [
        f"In scope: {found['in_scope']['images']} held-out photographs (reference and fit: "
        f"{found['in_scope']['fit']}); the deployed rule accepts "
        f"{found['in_scope']['accepted_by_rule']:.1%} of them.",
        "",
        "| source | photographs (images) | "
        + " | ".join(f"{n} AUROC / FPR95" for n in names)
        + " | declined: quality | declined: rule | LOSO choice → AUROC |",
        "|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for kind, row in found["sources"].items():
        cells = " | ".join(
            f"{row['scores'][n]['auroc']:.3f} / {row['scores'][n]['fpr_at_95_tpr']:.2f}"
            for n in names
        )
        loso = found["leave_one_source_out"][kind]
        lines.append(
            f"| {kind} | {row['photographs']} ({row['images']}) | {cells} | "
            f"{row['declined']['quality']:.0%} | {row['declined']['rule']:.0%} | "
            f"{loso['chosen']} → {loso['auroc']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = Path(os.environ.get("DERMCAM_BENCH_OUT", "test-output/scope-benchmark"))
    if "--out" in argv:
        at = argv.index("--out")
        out = Path(argv[at + 1])
        del argv[at : at + 2]
    found = run(argv)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scope-benchmark.json").write_text(json.dumps(found, indent=2) + "\n")
    (out / "scope-benchmark.md").write_text(markdown(found))
    print(markdown(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
