"""Deepfake-detection metrics: EER, frame/video-level reports, per-manipulation-method breakdown.

Conventions: labels 1 = fake, 0 = real; ``probs`` are P(fake) in [0, 1] (``sigmoid`` of the model's fake logit).

* :class:`BinaryEER` / :func:`binary_eer`: equal error rate, the point of the ROC curve where the false-positive
  rate equals the false-negative rate (linear interpolation between ROC points).
* :func:`binary_detection_metrics`: accuracy, precision, recall, F1 (at a threshold), AUC, EER, AP as Python floats.
* :func:`aggregate_by_video`: frame -> video scores ("mean", "max", or "vote" = fraction of frames called fake, the
  frame-aggregation rule of MesoNet, Afchar et al. 2018, Section 4.3 "image aggregation").
* :class:`DetectionScores`: a torchmetrics ``Metric`` that gathers (prob, label, video, group) rows across batches
  and processes (``dist_reduce_fx="cat"``) so that AUC/EER are computed once on everything, never averaged.
* :func:`detection_report`: frame + video metrics and the FaceForensics++ per-method breakdown (Rossler et al.
  2019: each manipulation method's fakes against all real samples).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    binary_f1_score,
    binary_precision,
    binary_recall,
    binary_roc,
)
from torchmetrics.utilities import dim_zero_cat

from faceforge.errors import FaceforgeError

__all__ = [
    "METRIC_KEYS",
    "BinaryEER",
    "DetectionScores",
    "NonFiniteScoresError",
    "aggregate_by_video",
    "binary_detection_metrics",
    "binary_eer",
    "constant_baseline",
    "detection_report",
]

METRIC_KEYS = ("acc", "precision", "recall", "f1", "auc", "eer", "ap", "n", "n_fake", "n_real")
"""Keys of the dict returned by :func:`binary_detection_metrics`."""

_AGGREGATIONS = ("mean", "max", "vote")


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------

class NonFiniteScoresError(FaceforgeError, ValueError):
    """Scores holding NaN: the network produced non-finite outputs, so no metric of them means anything."""


def _check_pair(preds: Tensor, target: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Validate 1-D (N,) scores and (N,) {0,1} labels; return them as float / int64 CPU-agnostic tensors."""
    preds, target = torch.as_tensor(preds), torch.as_tensor(target)
    if preds.ndim != 1 or target.ndim != 1 or preds.shape[0] != target.shape[0]:
        raise ValueError(f"{name}: expected preds (N,) and target (N,), got {tuple(preds.shape)} and "
                         f"{tuple(target.shape)}")
    if not preds.is_floating_point():
        raise ValueError(f"{name}: preds must be floating point probabilities, got dtype {preds.dtype}")
    if target.is_floating_point():
        if not torch.all((target == 0) | (target == 1)):
            raise ValueError(f"{name}: target must hold only 0 (real) and 1 (fake)")
        target = target.long()
    elif target.numel() and not torch.all((target == 0) | (target == 1)):
        raise ValueError(f"{name}: target must hold only 0 (real) and 1 (fake), got values "
                         f"{torch.unique(target).tolist()[:10]}")
    if torch.isnan(preds).any():
        raise NonFiniteScoresError(f"{name}: preds contain NaN: the network produced non-finite outputs (a diverged "
                                   f"model, or a checkpoint saved after its loss became NaN)")
    return preds, target.long()


def _check_probs(probs: Tensor, name: str) -> None:
    if probs.numel() and (probs.min() < 0 or probs.max() > 1):
        raise ValueError(f"{name}: probs must be probabilities in [0, 1] (apply sigmoid to logits first), got range "
                         f"[{float(probs.min()):.4g}, {float(probs.max()):.4g}]")


def _both_classes(target: Tensor) -> bool:
    return bool((target == 1).any()) and bool((target == 0).any())


# --------------------------------------------------------------------------------------------------------------
# EER
# --------------------------------------------------------------------------------------------------------------

def _eer_from_roc(fpr: Tensor, tpr: Tensor) -> Tensor:
    """EER from ROC points ordered by decreasing threshold (fpr, tpr non-decreasing, starting at (0, 0)).

    d = FPR - FNR = FPR + TPR - 1 is non-decreasing along the curve, from -1 at (0, 0) to +1 at (1, 1). The EER is
    where d crosses 0, linearly interpolated on the segment between the last point with d < 0 and the first with
    d >= 0 (on that segment FPR and FNR are both linear in the same parameter, so they meet at one value).
    """
    fpr, tpr = fpr.double(), tpr.double()
    d = fpr + tpr - 1.0
    i = int(torch.nonzero(d >= 0)[0, 0])
    if i == 0:
        return fpr[0].float()
    d0, d1 = d[i - 1], d[i]
    t = d0 / (d0 - d1)  # in (0, 1]
    return (fpr[i - 1] + t * (fpr[i] - fpr[i - 1])).float()


def binary_eer(preds: Tensor, target: Tensor) -> Tensor:
    """Equal error rate of binary scores.

    The threshold-free point of the ROC curve where the false-positive rate (reals called fake) equals the
    false-negative rate (fakes called real), by linear interpolation between ROC points (torchmetrics'
    ``binary_roc`` with exact thresholds). 0 for perfect separation, 1 for perfectly inverted scores, 0.5 for
    random ones. Invariant to monotone transforms of ``preds``.

    Args:
        preds: (N,) float scores, higher = more likely fake (probabilities in [0, 1]; logits give the same EER).
        target: (N,) int {0 real, 1 fake}.

    Returns:
        0-d float32 tensor in [0, 1]; NaN when only one class (or nothing) is present.

    Raises:
        ValueError: shapes differ or are not 1-D, non-binary targets, NaN scores.
    """
    preds, target = _check_pair(preds, target, "binary_eer")
    if not _both_classes(target):
        return torch.tensor(float("nan"), device=preds.device)
    fpr, tpr, _ = binary_roc(preds.float(), target, thresholds=None)
    return _eer_from_roc(fpr, tpr)


class BinaryEER(Metric):
    """Equal error rate as a torchmetrics ``Metric`` (see :func:`binary_eer`).

    States are the concatenated scores and labels (``dist_reduce_fx="cat"``), so the value over several processes
    is the EER of all their samples together, never an average of per-process EERs.

    ``update(preds, target)``: preds (N,) float probabilities in [0, 1], target (N,) int {0, 1}.
    ``compute()``: 0-d float32 tensor; NaN with only one class or no samples.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    preds: list[Tensor]
    target: list[Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Append a batch.

        Raises:
            ValueError: see :func:`binary_eer`.
        """
        preds, target = _check_pair(preds, target, "BinaryEER.update")
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().long())

    def compute(self) -> Tensor:
        """EER of everything seen so far (0-d float32 tensor, NaN if one class only or empty)."""
        if isinstance(self.preds, list) and len(self.preds) == 0:
            return torch.tensor(float("nan"), device=self.device)
        return binary_eer(dim_zero_cat(self.preds), dim_zero_cat(self.target))


# --------------------------------------------------------------------------------------------------------------
# Metric dict
# --------------------------------------------------------------------------------------------------------------

def binary_detection_metrics(probs: Tensor, labels: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Standard detection metrics of P(fake) scores, as Python floats (JSON-able, loggable).

    acc, precision, recall (= TPR on fakes), f1 use ``probs > threshold`` as the fake decision (torchmetrics
    functional, zero-division gives 0). auc (ROC AUC), eer (:func:`binary_eer`) and ap (average precision, fake as
    the positive class) are threshold-free.

    With only one class present, auc, eer and ap are undefined and returned as ``float('nan')`` (no exception and no
    torchmetrics warning); acc/precision/recall/f1 are still returned (recall is 0 with no fakes, precision 0 with no
    predicted fakes). With no samples at all every rate is NaN and n = 0.

    Args:
        probs: (N,) float P(fake) in [0, 1].
        labels: (N,) int {0 real, 1 fake}.
        threshold: decision threshold on ``probs``.

    Returns:
        dict with keys ``acc, precision, recall, f1, auc, eer, ap, n, n_fake, n_real`` (all Python floats; the
        counts are whole numbers).

    Raises:
        ValueError: bad shapes, non-binary labels, probabilities outside [0, 1] or NaN.
    """
    probs, labels = _check_pair(probs, labels, "binary_detection_metrics")
    _check_probs(probs, "binary_detection_metrics")
    probs = probs.float()
    n, n_fake = int(labels.numel()), int((labels == 1).sum())
    out = {"n": float(n), "n_fake": float(n_fake), "n_real": float(n - n_fake)}
    nan = float("nan")
    if n == 0:
        return {**{k: nan for k in ("acc", "precision", "recall", "f1", "auc", "eer", "ap")}, **out}
    out["acc"] = float(binary_accuracy(probs, labels, threshold=threshold))
    out["precision"] = float(binary_precision(probs, labels, threshold=threshold))
    out["recall"] = float(binary_recall(probs, labels, threshold=threshold))
    out["f1"] = float(binary_f1_score(probs, labels, threshold=threshold))
    if _both_classes(labels):
        out["auc"] = float(binary_auroc(probs, labels))
        out["eer"] = float(binary_eer(probs, labels))
        out["ap"] = float(binary_average_precision(probs, labels))
    else:
        out["auc"] = out["eer"] = out["ap"] = nan
    return {k: out[k] for k in METRIC_KEYS}


# --------------------------------------------------------------------------------------------------------------
# Video aggregation
# --------------------------------------------------------------------------------------------------------------

def aggregate_by_video(probs: Tensor, labels: Tensor, video_idx: Tensor, how: str = "mean",
                       threshold: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """Aggregate frame scores into one score per video (vectorised with scatter / index_add).

    Args:
        probs: (N,) float P(fake) per frame.
        labels: (N,) int {0, 1} per frame; all frames of a video must share one label.
        video_idx: (N,) int video index per frame (unique across the dataset).
        how: "mean" (average P(fake)), "max" (most suspicious frame), or "vote" (fraction of frames with
            ``prob > threshold``; MesoNet's image aggregation, Afchar et al. 2018, Section 4.3).
        threshold: frame decision threshold used by "vote".

    Returns:
        (video_probs (V,) float32, video_labels (V,) int64, video_ids (V,) int64 sorted ascending).

    Raises:
        ValueError: unknown ``how``; shapes differ; a video whose frames carry both labels (named in the message).
    """
    if how not in _AGGREGATIONS:
        raise ValueError(f"aggregate_by_video: unknown how={how!r}, expected one of {_AGGREGATIONS}")
    probs, labels = _check_pair(probs, labels, "aggregate_by_video")
    video_idx = torch.as_tensor(video_idx)
    if video_idx.shape != labels.shape:
        raise ValueError(f"aggregate_by_video: video_idx {tuple(video_idx.shape)} must match labels "
                         f"{tuple(labels.shape)}")
    video_ids, inv = torch.unique(video_idx.long(), sorted=True, return_inverse=True)
    v = video_ids.numel()
    lab_min = torch.full((v,), 2, dtype=torch.long, device=labels.device).scatter_reduce(
        0, inv, labels, reduce="amin", include_self=False)
    lab_max = torch.full((v,), -1, dtype=torch.long, device=labels.device).scatter_reduce(
        0, inv, labels, reduce="amax", include_self=False)
    mixed = torch.nonzero(lab_min != lab_max).flatten()
    if mixed.numel():
        bad = video_ids[mixed].tolist()
        raise ValueError(f"aggregate_by_video: video index {bad[0]} has frames labelled both real and fake "
                         f"({len(bad)} such video(s): {bad[:10]})")
    p = probs.float()
    counts = torch.zeros(v, dtype=torch.float32, device=p.device).index_add_(0, inv, torch.ones_like(p))
    if how == "mean":
        vp = torch.zeros(v, dtype=torch.float32, device=p.device).index_add_(0, inv, p) / counts
    elif how == "max":
        vp = torch.zeros(v, dtype=torch.float32, device=p.device).scatter_reduce(
            0, inv, p, reduce="amax", include_self=False)
    else:  # vote
        vp = torch.zeros(v, dtype=torch.float32, device=p.device).index_add_(0, inv, (p > threshold).float()) / counts
    return vp, lab_max, video_ids


# --------------------------------------------------------------------------------------------------------------
# Accumulating metric + report
# --------------------------------------------------------------------------------------------------------------

class DetectionScores(Metric):
    """Gathers per-sample detection outputs across batches and processes (``dist_reduce_fx="cat"``).

    States (concatenated 1-D tensors): ``probs`` float32 P(fake), ``labels`` int64 {0, 1}, ``video_idx`` int64,
    ``group_idx`` int64 (e.g. the manipulation-method index; the real group included), ``sample_idx`` int64 (the
    item's index in the dataset, -1 when not given). Feed :meth:`compute`'s dict to :func:`detection_report`.

    :meth:`compute` returns the rows sorted by ``sample_idx`` (stable), so the result does not depend on how the
    samples were split across processes: under DDP every rank's rows are gathered (uneven counts included) and the
    report equals a one-process run's bit for bit (floating-point sums per video run in the same order).
    """

    is_differentiable = False
    full_state_update = False

    probs: list[Tensor]
    labels: list[Tensor]
    video_idx: list[Tensor]
    group_idx: list[Tensor]
    sample_idx: list[Tensor]

    _STATES = ("probs", "labels", "video_idx", "group_idx", "sample_idx")
    _DTYPES = (torch.float32, torch.int64, torch.int64, torch.int64, torch.int64)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self._STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, labels: Tensor, video_idx: Tensor, group_idx: Tensor | None = None,
               sample_idx: Tensor | None = None) -> None:
        """Append a batch.

        Args:
            probs: (N,) float P(fake) in [0, 1].
            labels: (N,) int {0, 1}.
            video_idx: (N,) int video index (unique across the dataset).
            group_idx: (N,) int group index (e.g. manipulation method); zeros when None.
            sample_idx: (N,) int index of each item in its dataset (orders the rows in :meth:`compute`); -1 when
                None.

        Raises:
            ValueError: shapes differ, non-binary labels, probabilities outside [0, 1].
        """
        probs, labels = _check_pair(probs, labels, "DetectionScores.update")
        _check_probs(probs, "DetectionScores.update")
        video_idx = torch.as_tensor(video_idx, device=labels.device)
        group_idx = torch.zeros_like(labels) if group_idx is None else torch.as_tensor(group_idx,
                                                                                       device=labels.device)
        sample_idx = torch.full_like(labels, -1) if sample_idx is None else torch.as_tensor(sample_idx,
                                                                                           device=labels.device)
        for name, t in (("video_idx", video_idx), ("group_idx", group_idx), ("sample_idx", sample_idx)):
            if t.shape != labels.shape:
                raise ValueError(f"DetectionScores.update: {name} {tuple(t.shape)} must match labels "
                                 f"{tuple(labels.shape)}")
        for name, t, dtype in zip(self._STATES, (probs, labels, video_idx, group_idx, sample_idx), self._DTYPES):
            getattr(self, name).append(t.detach().to(dtype))

    def compute(self) -> dict[str, Tensor]:
        """Concatenated rows sorted by ``sample_idx``: {"probs": (N,) float32, "labels", "video_idx", "group_idx",
        "sample_idx": (N,) int64}.

        Empty tensors when nothing was seen.
        """
        out = {}
        for name, dtype in zip(self._STATES, self._DTYPES):
            state = getattr(self, name)
            if isinstance(state, list) and len(state) == 0:
                out[name] = torch.zeros(0, dtype=dtype, device=self.device)
            else:
                out[name] = dim_zero_cat(state).to(dtype)
        if len(out["sample_idx"]) > 1:
            order = torch.sort(out["sample_idx"], stable=True).indices
            out = {name: t[order] for name, t in out.items()}
        return out



def _frame_and_video(probs: Tensor, labels: Tensor, video_idx: Tensor, how: str,
                     threshold: float) -> dict[str, dict[str, float]]:
    vp, vl, _ = aggregate_by_video(probs, labels, video_idx, how=how, threshold=threshold)
    return {"frame": binary_detection_metrics(probs, labels, threshold),
            "video": binary_detection_metrics(vp, vl, threshold)}


def constant_baseline(labels: Tensor, video_idx: Tensor, threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """The best constant predictor on these labels, the trivial baseline shown beside every detector.

    At each level it answers every sample with that level's majority label, with certainty (P(fake) 1 when at
    least half the frames, or half the videos, are fake, else 0): AUC 0.5, EER 0.5, AP the share of fakes, ACC the
    majority share. The two levels are decided separately, since fake videos may have more frames than real ones
    (the frame majority need not be the video majority). A detector that does not beat it has learnt nothing; its
    accuracy is what "always fake" or "always real" scores, which on unbalanced data (FaceForensics++ has four
    fakes per real) is far above 0.5.

    Args:
        labels: (N,) int {0, 1} frame labels.
        video_idx: (N,) int video index.
        threshold: the detector's decision threshold; unused (a constant of certainty 0 or 1 is its own decision,
            whatever the threshold: "always fake" is fake even at threshold 1).

    Returns:
        ``{"frame": metrics, "video": metrics}`` as from :func:`binary_detection_metrics`.

    Raises:
        ValueError: as :func:`aggregate_by_video` (mixed labels within a video, bad shapes).
    """
    del threshold

    def constant(lab: Tensor) -> Tensor:
        fake = float(lab.float().mean()) >= 0.5 if lab.numel() else True
        return torch.full(lab.shape, 1.0 if fake else 0.0, dtype=torch.float32, device=lab.device)

    labels = torch.as_tensor(labels)
    _, video_labels, _ = aggregate_by_video(torch.zeros(labels.shape, dtype=torch.float32, device=labels.device),
                                            labels, torch.as_tensor(video_idx), how="mean")
    return {"frame": binary_detection_metrics(constant(labels), labels, 0.5),
            "video": binary_detection_metrics(constant(video_labels), video_labels, 0.5)}


def detection_report(scores: dict[str, Tensor], group_names: Sequence[str] | None = None,
                     video_aggregation: str = "mean", threshold: float = 0.5,
                     real_group: str = "original") -> dict[str, Any]:
    """Frame-level, video-level and per-manipulation-method metrics (JSON-serialisable, Python floats).

    Per method follows FaceForensics++ practice (Rossler et al., ICCV 2019, Section 4): the fake samples of that
    method together with **all** real samples (label 0). The real group gets no entry of its own. ``per_method``
    is ``{}`` when ``group_names`` is None or fewer than two fake methods occur in the data.

    Video metrics aggregate frames with :func:`aggregate_by_video` (``video_aggregation``) and threshold the video
    score at ``threshold`` (for "vote", video fake = more than ``threshold`` of its frames called fake).

    Args:
        scores: {"probs": (N,) float, "labels": (N,) int, "video_idx": (N,) int, "group_idx": (N,) int} as from
            :meth:`DetectionScores.compute` ("group_idx" only needed with ``group_names``).
        group_names: name of each group index (e.g. ["original", "Deepfakes", "Face2Face", ...]).
        video_aggregation: "mean", "max" or "vote".
        threshold: decision threshold for frames and videos.
        real_group: the name in ``group_names`` of the pristine group (skipped in per_method).

    Returns:
        {"frame": metrics, "video": metrics, "per_method": {name: {"frame": metrics, "video": metrics}},
        "baseline": {"frame": metrics, "video": metrics}}, metrics as from :func:`binary_detection_metrics`;
        ``baseline`` is the best constant predictor on the same samples (:func:`constant_baseline`).

    Raises:
        ValueError: missing keys, group indices outside ``group_names``, mixed labels within a video, bad inputs.
    """
    for key in ("probs", "labels", "video_idx"):
        if key not in scores:
            raise ValueError(f"detection_report: scores lack {key!r} (have {sorted(scores)})")
    probs, labels, video_idx = (torch.as_tensor(scores[k]) for k in ("probs", "labels", "video_idx"))
    report: dict[str, Any] = _frame_and_video(probs, labels, video_idx, video_aggregation, threshold)
    report["per_method"] = {}
    report["baseline"] = constant_baseline(labels, video_idx, threshold)
    if group_names is None:
        return report
    if "group_idx" not in scores:
        raise ValueError("detection_report: group_names given but scores lack 'group_idx'")
    group_idx = torch.as_tensor(scores["group_idx"]).long()
    if group_idx.numel() and (group_idx.min() < 0 or group_idx.max() >= len(group_names)):
        raise ValueError(f"detection_report: group_idx values {torch.unique(group_idx).tolist()} outside "
                         f"group_names of length {len(group_names)}")
    present = set(torch.unique(group_idx).tolist())
    fake_groups = [(gi, name) for gi, name in enumerate(group_names) if name != real_group and gi in present]
    if len(fake_groups) < 2:
        return report
    is_real = labels == 0
    for gi, name in fake_groups:
        mask = is_real | (group_idx == gi)
        report["per_method"][name] = _frame_and_video(probs[mask], labels[mask], video_idx[mask],
                                                      video_aggregation, threshold)
    return report
