"""Detection plots written as PNG: confusion matrix and ROC curve.

Uses matplotlib's object API (``matplotlib.figure.Figure`` rendered by the Agg canvas), never ``pyplot``: no global
figure registry, no GUI backend, nothing to ``show``; each figure is dropped when the function returns. Files are
written atomically (:func:`faceforge.utils.atomic.atomic_path`).

Conventions: labels 1 = fake, 0 = real; ``probs`` = P(fake) in [0, 1].
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_confusion_matrix, binary_roc

from faceforge.metrics.detection import binary_eer
from faceforge.utils.atomic import atomic_path

__all__ = ["save_confusion_matrix_png", "save_roc_curve_png"]

_CLASS_NAMES = ("real", "fake")


def _prepare(probs: Tensor, labels: Tensor, name: str) -> tuple[Tensor, Tensor]:
    probs = torch.as_tensor(probs).detach().float().cpu().flatten()
    labels = torch.as_tensor(labels).detach().long().cpu().flatten()
    if probs.shape != labels.shape:
        raise ValueError(f"{name}: probs {tuple(probs.shape)} and labels {tuple(labels.shape)} differ in length")
    if labels.numel() and not torch.all((labels == 0) | (labels == 1)):
        raise ValueError(f"{name}: labels must be 0 (real) or 1 (fake)")
    if probs.numel() and (torch.isnan(probs).any() or probs.min() < 0 or probs.max() > 1):
        raise ValueError(f"{name}: probs must be probabilities in [0, 1]")
    return probs, labels


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def save_confusion_matrix_png(probs: Tensor, labels: Tensor, path: str | os.PathLike, threshold: float = 0.5,
                              title: str = "") -> Path:
    """Save the 2x2 confusion matrix (rows: true real/fake, columns: predicted real/fake) with counts in cells.

    Args:
        probs: (N,) float P(fake) in [0, 1].
        labels: (N,) int {0 real, 1 fake}.
        path: destination PNG (parent folders created; written atomically).
        threshold: a sample is predicted fake when ``prob > threshold``.
        title: figure title.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: mismatched shapes, labels not in {0, 1}, probabilities outside [0, 1].
    """
    probs, labels = _prepare(probs, labels, "save_confusion_matrix_png")
    if labels.numel():
        cm = binary_confusion_matrix(probs, labels, threshold=threshold)
    else:
        cm = torch.zeros(2, 2, dtype=torch.long)
    fig = Figure(figsize=(4.2, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    peak = int(cm.max())
    for i in range(2):
        for j in range(2):
            v = int(cm[i, j])
            ax.text(j, i, str(v), ha="center", va="center", fontsize=13,
                    color="white" if peak and v > peak / 2 else "black")
    ax.set_xticks([0, 1], labels=list(_CLASS_NAMES))
    ax.set_yticks([0, 1], labels=list(_CLASS_NAMES))
    ax.set_xlabel(f"predicted (fake if p > {threshold:g})")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    if labels.numel() == 0 or not ((labels == 0).any() and (labels == 1).any()):
        note = "no samples" if labels.numel() == 0 else "only one class present"
        ax.text(0.5, -0.32, note, transform=ax.transAxes, ha="center", va="top", fontsize=9, color="darkred")
    fig.tight_layout()
    return _save(fig, path)


def save_roc_curve_png(probs: Tensor, labels: Tensor, path: str | os.PathLike, title: str = "") -> Path:
    """Save the ROC curve (FPR on x, TPR on y) with AUC and EER in the legend and the chance diagonal dashed.

    With a single class (or no samples) the ROC is undefined: the figure shows the diagonal and a note instead.

    Args:
        probs: (N,) float P(fake) in [0, 1].
        labels: (N,) int {0 real, 1 fake}.
        path: destination PNG (parent folders created; written atomically).
        title: figure title.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: mismatched shapes, labels not in {0, 1}, probabilities outside [0, 1].
    """
    probs, labels = _prepare(probs, labels, "save_roc_curve_png")
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="chance")
    if bool((labels == 0).any()) and bool((labels == 1).any()):
        fpr, tpr, _ = binary_roc(probs, labels, thresholds=None)
        auc = float(binary_auroc(probs, labels))
        eer = float(binary_eer(probs, labels))
        ax.plot(fpr.numpy(), tpr.numpy(), color="C0", linewidth=2, label=f"ROC (AUC = {auc:.4f})")
        ax.plot([eer], [1 - eer], marker="o", color="C3", linestyle="none", label=f"EER = {eer:.4f}")
    else:
        note = "no samples" if labels.numel() == 0 else "only one class present: ROC undefined"
        ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="darkred")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake called fake)")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_aspect("equal")
    fig.tight_layout()
    return _save(fig, path)
