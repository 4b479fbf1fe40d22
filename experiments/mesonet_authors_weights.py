"""The MesoNet authors' released Keras weights on a folder of labelled face crops (frame level).

    .venv/bin/python experiments/mesonet_authors_weights.py --images ../shared/fixtures/mesonet/test_images \
        --weights ../shared/fixtures/mesonet/weights/Meso4_DF.h5 ../shared/fixtures/mesonet/weights/MesoInception_DF.h5

The image folder holds class sub-folders: ``df``/``fake`` (label 1) and ``real`` (label 0). Images are prepared as
the authors did (PIL nearest resize to 256x256, scaled by 1/255; see
:func:`faceforge.models.meso.mesonet_preprocess`). Prints a markdown table (accuracy, AUC, EER, AP, counts).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from faceforge.metrics.detection import binary_detection_metrics
from faceforge.models.meso import from_keras_h5, mesonet_preprocess
from faceforge.reporting.tables import markdown_table

LABELS = {"df": 1, "fake": 1, "real": 0}


def load_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 256, 256) float images and (N,) int64 labels from ``root/<df|fake|real>/*``."""
    images, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name in LABELS):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                with Image.open(path) as im:
                    images.append(mesonet_preprocess(im))
                labels.append(LABELS[folder.name])
    if not images:
        raise SystemExit(f"no images under {root}/{{df,fake,real}}/")
    return torch.stack(images), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--weights", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    images, labels = load_folder(args.images)
    rows = []
    for weights in args.weights:
        model = from_keras_h5(weights)
        with torch.no_grad():
            probs = torch.sigmoid(model(images))
        rows.append({"dataset": args.images.name, "subset": weights.name, "level": "frame",
                     **binary_detection_metrics(probs, labels)})
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
