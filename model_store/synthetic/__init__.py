"""Synthetic lesion images generated in code, from seeds: what the demos train on, what the
parity gate and the fit check send when the user's own images are not at hand."""

from model_store.synthetic.lesions import CLASSES, STYLES, dataset, lesion_image, write_folder

__all__ = ["CLASSES", "STYLES", "dataset", "lesion_image", "write_folder"]
