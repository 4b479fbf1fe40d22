"""Plots written to files (matplotlib Agg, no GUI)."""
from __future__ import annotations

from faceforge.visualization.plots import save_confusion_matrix_png, save_roc_curve_png

__all__ = ["save_confusion_matrix_png", "save_roc_curve_png"]
