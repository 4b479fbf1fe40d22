"""Binary deepfake detection task: image-level models (Meso-4, MesoInception-4) and clip-level video models
(ResNeXt-LSTM).

The task owns the loss, the metrics and the optimisation; the wrapped network is a plain ``nn.Module`` mapping
float images in [0, 1] of shape (B, 3, H, W) to logits for "fake" of shape (B,) (or (B, 1)), or, for video models,
float clips (B, T, 3, H, W) and ``lengths`` (B,) to (B,) logits (``net(clips, lengths=lengths)``).

Batches are dicts from :class:`faceforge.data.detection.frames.FaceCropDataset`: ``image`` uint8 (B, 3, H, W)
(converted to
float and scaled by 1/255 here, on the device), ``label`` int64 (B,) with 1 = fake, ``video_idx`` and
``method_idx`` int64 (B,); or from :class:`faceforge.data.detection.clips.FaceClipDataset`: ``image`` uint8 (B, T, 3,
H, W)
plus ``lengths`` int64 (B,) (valid frames per clip; the network ignores the padding). A batch with ``lengths`` is
a clip batch. Each clip carries its video's ``video_idx``, so "frame-level" metrics below are clip-level for clip
batches, and video-level metrics aggregate the clips of each video.

Metrics (per stage, torchmetrics objects, never ``sync_dist`` averages of AUC or F1): frame-level accuracy,
precision, recall, F1, AUROC, EER and AP, and the same at video level (frame probabilities aggregated per video id:
mean by default, max, or the MesoNet vote fraction). On test, per manipulation method as in FaceForensics++
(the fakes of one method against all real samples), with a confusion matrix and a ROC curve saved as PNG and logged
to W&B when a W&B logger is attached.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAccuracy

from faceforge.errors import FaceforgeError
from faceforge.metrics.detection import DetectionScores, detection_report
from faceforge.tasks.checkpointing import FaceforgeCheckpointMixin
from faceforge.tasks.optim import configure_optimization
from faceforge.tasks.protocols import task_data

#: Metrics logged per stage (keys of :func:`faceforge.metrics.detection.binary_detection_metrics`).
LOGGED_METRICS = ("auc", "eer", "ap", "acc", "precision", "recall", "f1")


#: How a video's frame (or clip) probabilities become its probability
#: (:func:`~faceforge.metrics.detection.aggregate_by_video`).
VIDEO_AGGREGATIONS = ("mean", "max", "vote")


class DetectionConfigError(FaceforgeError, ValueError):
    """An unknown ``model.loss`` or ``model.video_aggregation`` (the message names the setting and its values)."""


class DetectionInputError(FaceforgeError, ValueError):
    """A batch does not fit the network: clips (a batch with ``lengths``) for a frame model, or single frames for a
    clip model; the message names the setting to change (``data.clip_length``)."""


def takes_lengths(net: nn.Module) -> bool:
    """Whether ``net.forward`` accepts a ``lengths`` argument (a clip model such as ResNeXt-LSTM)."""
    try:
        return "lengths" in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """Convert uint8 images (B, 3, H, W) or clips (B, T, 3, H, W) in 0..255 to float32 in [0, 1] (same shape);
    float input passes through as float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.float()


class DetectionTask(FaceforgeCheckpointMixin, pl.LightningModule):
    """LightningModule for binary (real/fake) face-crop classification.

    Args:
        net: network mapping (B, 3, H, W) float images in [0, 1] to (B,) or (B, 1) logits for "fake"; for clip
            batches, called as ``net(clips, lengths=lengths)`` with (B, T, 3, H, W) float clips.
        loss: ``"bce"`` (binary cross-entropy on the logit; default) or ``"mse"`` (mean squared error on the
            sigmoid, the loss of the MesoNet paper, Afchar et al. 2018, Sec. 4).
        optimizer: primitive optimiser spec, e.g. ``{"_target_": "torch.optim.Adam", "lr": 1e-3}`` (MesoNet's Adam,
            lr 1e-3), see :func:`faceforge.tasks.optim.build_optimizer` (an allowlisted ``torch.optim`` class;
            ``trainable_only``, default True, hands the optimiser only the parameters with ``requires_grad``).
        scheduler: primitive scheduler spec, e.g. ``{"_target_": "torch.optim.lr_scheduler.StepLR", "step_size":
            10}`` (see :func:`faceforge.tasks.optim.build_scheduler`) or None.
        video_aggregation: how frame probabilities become a video probability: ``mean``, ``max`` or ``vote``.
        threshold: decision threshold on P(fake) for accuracy, precision, recall, F1 and confusion matrices.
        monitor: the validation metric the checkpoint is chosen on (``val/auc``).
        monitor_mode: ``max`` or ``min``: whether a larger ``monitor`` is better.
        net_spec: YAML of the network's Hydra config, stored in checkpoints so that they rebuild the network
            (set by ``train.py``; a primitive string, so checkpoints load with ``weights_only=True``).
        input: what the network needs of the data, as primitives, e.g. ``{"image_size": 112, "clip_length": 10,
            "batch_size": 4}`` (``model.input`` of the config): ``train.py`` and ``evaluate.py`` hand these to the
            data module (:func:`faceforge.runs.input_needs.apply_input_needs`); recorded in checkpoints. None: the
            data config's own settings.

    Raises:
        DetectionConfigError: unknown ``loss`` or ``video_aggregation``.
        DetectionInputError: from the steps, when clip batches meet a frame model or frame batches a clip model.
        faceforge.tasks.optim.OptimConfigError: from :meth:`configure_optimizers`, when no parameter is trainable
            or the optimiser spec is invalid.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: str = "bce",
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        video_aggregation: str = "mean",
        threshold: float = 0.5,
        monitor: str = "val/auc",
        monitor_mode: str = "max",
        net_spec: str | None = None,
        input: Mapping[str, Any] | None = None,  # the config's model.input block
    ) -> None:
        super().__init__()
        if loss not in ("bce", "mse"):
            raise DetectionConfigError(f"model.loss must be 'bce' or 'mse', got {loss!r}")
        if video_aggregation not in VIDEO_AGGREGATIONS:
            raise DetectionConfigError(f"model.video_aggregation must be one of {', '.join(VIDEO_AGGREGATIONS)}, "
                                       f"got {video_aggregation!r}")
        input = dict(input) if input is not None else None  # a plain dict hyperparameter
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self._clip_model = takes_lengths(net)
        self.train_acc = BinaryAccuracy(threshold=threshold)
        self.val_scores = DetectionScores()
        self.test_scores = DetectionScores()
        #: filled at the end of a test epoch: the full report (frame, video, per-method metrics)
        self.test_report: dict[str, Any] | None = None
        #: filled at the end of a test epoch: concatenated per-frame scores (probs, labels, video_idx, group_idx)
        self.test_outputs: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ forward / loss
    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for "fake", shape (B,) float32.

        Args:
            images: uint8 (B, 3, H, W) images, or uint8 (B, T, 3, H, W) clips (float in [0, 1] also accepted).
            lengths: int64 (B,) valid frames per clip (clips only); when given the network is called as
                ``net(clips, lengths=lengths)``.
        """
        x = images_to_float(images)
        logits = self.net(x) if lengths is None else self.net(x, lengths=lengths)
        return logits.reshape(logits.shape[0])

    def _logits(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits of a frame batch or (when it has ``lengths``) a clip batch.

        Raises:
            DetectionInputError: clips for a frame model, or single frames for a clip model.
        """
        lengths = batch.get("lengths")
        name = type(self.net).__name__
        if lengths is not None and not self._clip_model:
            raise DetectionInputError(f"the data serves clips (data.clip_length is set) but {name} is a frame-level "
                                      f"model: set data.clip_length=null")
        if lengths is None and self._clip_model and batch["image"].ndim == 4:
            raise DetectionInputError(f"{name} is a clip-level model but the data serves single face crops: set "
                                      f"data.clip_length (e.g. data.clip_length=10, as in conf/model/"
                                      f"resnext_lstm.yaml; evaluate.py needs the same data settings as training)")
        return self(batch["image"], lengths)

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The configured loss between (B,) logits and (B,) {0,1} labels (a 0-d tensor)."""
        target = labels.to(logits.dtype)
        if self.hparams.loss == "mse":
            return F.mse_loss(torch.sigmoid(logits), target)
        return F.binary_cross_entropy_with_logits(logits, target)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self._logits(batch)
        loss = self.compute_loss(logits, batch["label"])
        self.train_acc(torch.sigmoid(logits.detach()), batch["label"])
        bs = logits.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _eval_step(self, batch: Mapping[str, torch.Tensor], scores: DetectionScores, stage: str) -> None:
        logits = self._logits(batch)
        loss = self.compute_loss(logits, batch["label"])
        scores.update(torch.sigmoid(logits.float()), batch["label"], batch["video_idx"], batch["method_idx"],
                      batch.get("index"))
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, batch_size=logits.shape[0], sync_dist=True)

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_scores, "val")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_scores, "test")

    # ------------------------------------------------------------------ epoch ends
    def _report(self, scores: DetectionScores, group_names: list[str] | None) -> tuple[dict[str, Any], dict]:
        raw = scores.compute()
        scores.reset()
        report = detection_report(raw, group_names=group_names, video_aggregation=self.hparams.video_aggregation,
                                  threshold=self.hparams.threshold)
        return report, raw

    def _log_report(self, stage: str, report: Mapping[str, Any]) -> None:
        flat: dict[str, float] = {}
        for name in LOGGED_METRICS:
            flat[f"{stage}/{name}"] = float(report["frame"][name])
            flat[f"{stage}/video_{name}"] = float(report["video"][name])
        for name in ("auc", "ap", "acc"):
            if "baseline" in report:
                flat[f"{stage}/baseline_{name}"] = float(report["baseline"]["frame"][name])
        for method, per in report.get("per_method", {}).items():
            for level in ("frame", "video"):
                for name in ("auc", "eer", "acc"):
                    flat[f"{stage}/{method}/{level}_{name}"] = float(per[level][name])
        self.log_dict(flat)

    def on_validation_epoch_end(self) -> None:
        if not self.val_scores.update_called:
            return
        report, _ = self._report(self.val_scores, None)
        self._log_report("val", report)

    def on_test_epoch_end(self) -> None:
        if not self.test_scores.update_called:
            return
        data = task_data(getattr(self.trainer, "datamodule", None))
        group_names = list(data.group_names() or []) or None if data is not None else None
        report, raw = self._report(self.test_scores, group_names)
        self._log_report("test", report)
        self.test_report = report
        self.test_outputs = {k: v.detach().cpu() for k, v in raw.items()}
        if self.trainer.is_global_zero:
            self._save_plots(raw)

    def _save_plots(self, raw: Mapping[str, torch.Tensor]) -> None:
        from faceforge.visualization.plots import save_confusion_matrix_png, save_roc_curve_png

        out_dir = Path(self.trainer.default_root_dir) / "plots"
        probs, labels = raw["probs"].cpu(), raw["labels"].cpu()
        paths = {
            "test/confusion_matrix": save_confusion_matrix_png(probs, labels, out_dir / "test_confusion_matrix.png",
                                                               threshold=self.hparams.threshold,
                                                               title="test, frame level"),
            "test/roc_curve": save_roc_curve_png(probs, labels, out_dir / "test_roc_curve.png",
                                                 title="test, frame level"),
        }
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                for key, path in paths.items():
                    logger.log_image(key=key, images=[str(path)])

    # ------------------------------------------------------------------ evaluation outputs
    def result_table(self, report: Mapping[str, Any], dataset: str) -> tuple[list[dict[str, Any]], Any]:
        """Rows and (key, title) columns of the results table for a test report (used by evaluate.py)."""
        from faceforge.reporting.tables import DETECTION_COLUMNS, detection_rows

        return detection_rows(report, dataset=dataset), DETECTION_COLUMNS

    def write_test_outputs(self, output_dir: str | Path, datamodule: Any) -> list[Path]:
        """Write ``video_predictions.csv`` (one row per test video) into ``output_dir``; return the paths written.

        Needs the data module's item and group names (:class:`~faceforge.tasks.protocols.TaskData`: the lookups
        behind ``video_idx`` and ``method_idx``); writes nothing when they or the test outputs are absent. The
        ``frames`` column counts the scored items of the video: face crops for a frame model, clips for a clip
        model.
        """
        from faceforge.metrics.detection import aggregate_by_video
        from faceforge.reporting.tables import write_video_predictions

        out = self.test_outputs
        data = task_data(datamodule)
        video_ids = data.item_names("test") if data is not None else None
        method_names = data.group_names() if data is not None else None
        if not out or video_ids is None or method_names is None or out["probs"].numel() == 0:
            return []
        vprobs, vlabels, vidx = aggregate_by_video(out["probs"], out["labels"], out["video_idx"],
                                                   how=self.hparams.video_aggregation,
                                                   threshold=self.hparams.threshold)
        frames = torch.bincount(out["video_idx"], minlength=int(vidx.max()) + 1)[vidx]
        method_of = {int(v): int(g) for v, g in zip(out["video_idx"].tolist(), out["group_idx"].tolist())}
        path = write_video_predictions(Path(output_dir) / "video_predictions.csv",
                                       [video_ids[i] for i in vidx.tolist()],
                                       [method_names[method_of[i]] for i in vidx.tolist()], vlabels, vprobs,
                                       frames, threshold=self.hparams.threshold)
        return [path]

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        return configure_optimization(self.parameters(), self.hparams.optimizer, self.hparams.scheduler)
