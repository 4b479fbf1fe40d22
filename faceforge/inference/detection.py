"""P(fake) for images, videos and folders: the training pipeline's face extraction, then a detection checkpoint.

:func:`load_detector` reads a faceforge detection checkpoint through the safe loader
(:func:`faceforge.tasks.checkpointing.load_task`: ``weights_only=True``, registry-built network, nothing imported
from the file) or the MesoNet authors' Keras ``.h5`` weights (:func:`faceforge.models.meso.from_keras_h5`, as
``evaluate.py ckpt_path=FILE.h5`` does). :class:`Predictor` then does for every input what training's face
extraction does (:mod:`faceforge.data.detection.extraction`): decode (PyAV for videos, evenly spaced frames),
detect faces with MTCNN (:class:`~faceforge.data.detection.extraction.FaceDetector`), cut square crops with the
same margin and size (:func:`~faceforge.data.detection.extraction.crop_face`), and scores each crop. The number of
frames, their sampling, the detector settings and the margin are those the checkpoint's training faces were
extracted with (its data module records them), so on a video prepared with those settings the video's P(fake)
equals what ``evaluate.py`` reports for it (``tests/test_train_video.py`` checks this on real videos).

Scores
------
* per face: ``P(fake) = sigmoid(logit)`` of the network;
* per frame (or image): the largest P(fake) of its faces (a frame is as suspicious as its most suspicious face);
* per video: the frame scores aggregated by the checkpoint's ``video_aggregation`` (``mean`` by default, ``max``,
  or ``vote`` = share of frames above the threshold; :func:`faceforge.metrics.detection.aggregate_by_video`);
* clip models (ResNeXt-LSTM, a network whose ``forward`` takes ``lengths``): a video's faces (the most confident
  face of each sampled frame with one, in frame order, as :class:`~faceforge.data.detection.clips.FaceClipDataset`
  takes them) are cut into clips of ``T = clip_length`` faces (the checkpoint's ``input.clip_length``). By default
  these are the clips evaluation scores: the checkpoint's ``clips_per_video`` clips placed by its
  ``clip_sampling`` (``evenly``: ``T`` faces evenly spaced over the video; ``contiguous``: a centred run of ``T``
  consecutive faces), so the faces of a clip are as far apart as in training. ``clips="cover"`` (``--clips
  cover``) cuts instead ``K = ceil(n / T)`` clips of consecutive faces that together cover them all
  (:func:`covering_clip_positions`). A video with fewer than ``T`` faces gets one clip padded with its last face
  and ``lengths = n``, as in training. Each clip gets a P(fake) (``clips`` rows say which frames it covers); the
  video's P(fake) aggregates the clips by ``video_aggregation``. A clip model cannot score a single image: such an
  input gets status ``error`` with a message saying so;
* decision: ``fake`` when ``P(fake) > threshold`` (the checkpoint's ``threshold`` hyperparameter, 0.5 for
  imported weights; strictly above, as evaluation and its torchmetrics metrics decide), else ``real``;
  confidence: the probability of the decided class (``p`` for fake, ``1 - p`` for real), in [0.5, 1] at threshold 0.5.

An input that cannot be read, or in which no face is found, gets ``status`` ``error`` / ``no_face`` with a message
naming the file and the problem; the other inputs go on.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError

__all__ = ["DEFAULT_MARGIN", "DEFAULT_NUM_FRAMES", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "DetectorModel",
           "CLIP_MODES", "FaceScore", "InputResult", "PredictError", "Predictor", "collect_inputs",
           "covering_clip_positions",
           "format_table", "load_detector", "results_to_csv", "results_to_json", "write_results"]

#: Crop margin of training's face extraction (``conf/data/video_base.yaml``, ``builder.margin``): the square crop
#: side is ``max(box w, h) * (1 + margin)``.
DEFAULT_MARGIN = 0.3
#: Frames sampled evenly from a video (``conf/data/video_base.yaml``, ``builder.num_frames``).
DEFAULT_NUM_FRAMES = 32
#: Crop side for checkpoints that record none (``conf/data/face_base.yaml``, ``image_size``; MesoNet's 256).
DEFAULT_IMAGE_SIZE = 256

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class PredictError(FaceforgeError, ValueError):
    """An inference request that cannot be served (a checkpoint of another kind, a bad setting, no input)."""


@dataclass
class DetectorModel:
    """A detection network ready for inference and the settings its crops must follow.

    Attributes:
        task: the :class:`~faceforge.tasks.detection.DetectionTask` (eval mode, CPU).
        image_size: crop side in pixels the network takes.
        margin: crop margin (see :data:`DEFAULT_MARGIN`).
        threshold: decision threshold on P(fake).
        video_aggregation: ``mean``, ``max`` or ``vote``.
        source: ``faceforge checkpoint`` or ``MesoNet authors' Keras h5``.
        path: the weight file.
        architecture: the network's class name.
        clip_length: faces per clip ``T`` for a clip model (ResNeXt-LSTM; the checkpoint's ``input.clip_length``),
            None for a frame model.
        clip_sampling: how evaluation placed a clip's ``T`` faces among a video's faces (the data module's
            ``clip_sampling``: ``evenly`` or ``contiguous``; see :mod:`faceforge.data.detection.clips`).
        clips_per_video: clips per video in evaluation (the data module's ``clips_per_video``).
        extraction: the face extraction settings the training faces were made with (the data module's recorded
            ``extraction``: ``num_frames``, ``sampling``, ``stride``, ``seed``, ``margin``, ``detector``; empty for
            imported weights, the synthetic set and checkpoints written before they were recorded).
    """

    task: Any
    image_size: int
    margin: float
    threshold: float
    video_aggregation: str
    source: str
    path: str
    architecture: str
    clip_length: int | None = None
    clip_sampling: str = "evenly"
    clips_per_video: int = 1
    extraction: dict[str, Any] = field(default_factory=dict)

    @property
    def is_clip_model(self) -> bool:
        """Whether the network scores clips of faces (True) or single face crops (False)."""
        return self.clip_length is not None


#: Face detector settings a checkpoint may carry over to inference (``FaceDetector`` keywords; never the device).
_DETECTOR_KEYS = ("min_face_size", "min_face_fraction", "thresholds", "factor")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _recorded_data(ckpt: dict[str, Any], path: Path) -> tuple[dict[str, Any], str, int]:
    """The data settings a checkpoint records for inference, checked as untrusted data.

    Returns:
        ``(extraction, clip_sampling, clips_per_video)``: the data module's ``extraction`` reduced to the keys
        inference uses (``num_frames``, ``sampling``, ``stride``, ``seed``, ``margin``, ``detector`` with only
        :data:`_DETECTOR_KEYS`), or ``{}``; its ``clip_sampling`` and ``clips_per_video`` (``evenly`` and 1 when
        absent). Older checkpoints may hold the margin as ``builder.margin`` or ``margin``.

    Raises:
        PredictError: a recorded value of the wrong type or out of range (the message names the file and key).
    """
    from faceforge.data.detection.clips import CLIP_SAMPLINGS
    from faceforge.data.detection.extraction.sampling import SAMPLING_MODES

    saved = ckpt.get("datamodule_hyper_parameters")
    saved = saved if isinstance(saved, dict) else {}

    def bad(key: str, value: Any, want: str) -> PredictError:
        return PredictError(f"{path}: the checkpoint's datamodule_hyper_parameters.{key} is {value!r}, "
                            f"expected {want}")

    raw = saved.get("extraction")
    raw = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    checks = {"num_frames": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
              "sampling": (lambda v: v in SAMPLING_MODES, f"one of {SAMPLING_MODES}"),
              "stride": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
              "seed": (_is_int, "an integer"),
              "margin": (lambda v: _is_number(v) and v >= 0, "a number >= 0")}
    for key, (ok, want) in checks.items():
        if key in raw:
            if not ok(raw[key]):
                raise bad(f"extraction.{key}", raw[key], want)
            out[key] = raw[key]
    detector = raw.get("detector") or {}
    if not isinstance(detector, dict):
        raise bad("extraction.detector", detector, "a mapping of FaceDetector settings")
    kept = {}
    for key in _DETECTOR_KEYS:
        value = detector.get(key)
        if value is None:
            continue
        valid = (isinstance(value, list) and len(value) == 3 and all(_is_number(t) for t in value)) \
            if key == "thresholds" else _is_number(value)
        if not valid:
            raise bad(f"extraction.detector.{key}", value, "a number" if key != "thresholds" else "3 numbers")
        kept[key] = value
    if kept:
        out["detector"] = kept
    if "margin" not in out:  # checkpoints written before the extraction settings were recorded
        for holder in (saved.get("builder"), saved):
            if isinstance(holder, dict) and _is_number(holder.get("margin")) and holder["margin"] >= 0:
                out["margin"] = float(holder["margin"])
                break
    sampling = saved.get("clip_sampling", "evenly")
    if sampling not in CLIP_SAMPLINGS:
        raise bad("clip_sampling", sampling, f"one of {CLIP_SAMPLINGS}")
    per_video = saved.get("clips_per_video", 1)
    if not _is_int(per_video) or per_video < 1:
        raise bad("clips_per_video", per_video, "an integer >= 1")
    return out, str(sampling), int(per_video)


def load_detector(path: str | Path) -> DetectorModel:
    """Load a detection model for inference from a faceforge checkpoint or the MesoNet authors' ``.h5``.

    Checkpoints are read ONLY through :func:`faceforge.tasks.checkpointing.read_checkpoint` /
    :func:`~faceforge.tasks.checkpointing.load_task` (tensors and primitives; registry-built network).

    Args:
        path: a ``.ckpt`` written by ``train.py`` with a detection model, or ``Meso4_DF.h5`` /
            ``MesoInception_DF.h5`` (told by the HDF5 signature).

    Returns:
        :class:`DetectorModel`; crop size from the checkpoint's ``input.image_size`` (else 256), the face extraction
        settings (frames, frame sampling, margin, detector), clip sampling and clips per video from its data module's
        hyperparameters (else 32 evenly spaced frames, :data:`DEFAULT_MARGIN`, the detector's defaults, one
        centred clip), threshold and aggregation from its task's hyperparameters (else 0.5 and ``mean``).

    Raises:
        faceforge.tasks.checkpointing.CheckpointError: the file is missing, unreadable, or cannot be rebuilt safely.
        faceforge.models.meso.KerasWeightsError: an HDF5 file that is not a MesoNet weight file.
        PredictError: the checkpoint holds another kind of model (e.g. a 3D reconstruction network), a clip
            model (ResNeXt-LSTM) whose checkpoint records no ``input.clip_length`` (or a non-positive one), or
            recorded data settings of the wrong type or out of range.
    """
    from omegaconf import OmegaConf

    from faceforge.runs.evaluation import _imported_mesonet_task, checkpoint_input_needs, is_keras_h5
    from faceforge.tasks.checkpointing import load_task, read_checkpoint
    from faceforge.tasks.detection import DetectionTask, takes_lengths

    path = Path(path)
    needs: dict[str, Any] = {}
    extraction: dict[str, Any] = {}
    clip_sampling, clips_per_video = "evenly", 1
    if is_keras_h5(path):
        task, _ = _imported_mesonet_task(OmegaConf.create({"video_aggregation": "mean"}), path)
        source, size = "MesoNet authors' Keras h5", DEFAULT_IMAGE_SIZE
    else:
        ckpt = read_checkpoint(path)
        needs, _ = checkpoint_input_needs(ckpt, path)
        extraction, clip_sampling, clips_per_video = _recorded_data(ckpt, path)
        task = load_task(ckpt, source=path)
        source = "faceforge checkpoint"
        size = int(needs.get("image_size") or DEFAULT_IMAGE_SIZE)
    margin = float(extraction.get("margin", DEFAULT_MARGIN))
    if not isinstance(task, DetectionTask):
        raise PredictError(f"{path}: holds a {type(task).__name__} ({type(task.net).__name__}), not a deepfake "
                           f"detection model; `faceforge reconstruct` takes 3D reconstruction checkpoints")
    clip_length = None
    if takes_lengths(task.net):
        raw = needs.get("clip_length")
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise PredictError(f"{path}: {type(task.net).__name__} is a clip model but the checkpoint records no "
                               f"usable input.clip_length (got {raw!r}); it cannot say how many faces a clip holds")
        clip_length = int(raw)
    task = task.to("cpu").eval()
    return DetectorModel(task=task, image_size=size, margin=float(margin),
                         threshold=float(task.hparams.get("threshold", 0.5)),
                         video_aggregation=str(task.hparams.get("video_aggregation", "mean") or "mean"),
                         source=source, path=str(path), architecture=type(task.net).__name__,
                         clip_length=clip_length, clip_sampling=clip_sampling, clips_per_video=clips_per_video,
                         extraction=extraction)


def covering_clip_positions(n: int, clip_length: int) -> list[np.ndarray]:
    """Clips of ``clip_length`` consecutive positions that together cover all ``n`` faces of a video.

    ``K = ceil(n / T)`` clips; clip ``k`` starts at ``round(k * (n - T) / (K - 1))`` (first face to last, evenly
    spread; neighbours overlap when ``T`` does not divide ``n``). The positions come from
    :func:`faceforge.data.detection.clips.clip_positions` (``contiguous``, the offset that gives that start), so a
    clip is exactly what the training data would serve there.

    Args:
        n: faces (>= 1).
        clip_length: ``T`` (>= 1).

    Returns:
        ``K`` int64 arrays of ``min(n, T)`` strictly increasing positions in ``[0, n)`` (one array of all ``n``
        positions when ``n <= T``; the caller pads it to ``T`` with the last face, as training does).

    Raises:
        ValueError: ``n < 1`` or ``clip_length < 1``.
    """
    from faceforge.data.detection.clips import clip_positions

    if n < 1 or clip_length < 1:
        raise ValueError(f"need n >= 1 and clip_length >= 1, got n={n}, clip_length={clip_length}")
    if n <= clip_length:
        return [clip_positions(n, clip_length, "contiguous", 0.0)]
    k_total = math.ceil(n / clip_length)
    span = n - clip_length  # largest start
    out = []
    for k in range(k_total):
        start = round(k * span / (k_total - 1))
        # clip_positions' contiguous start is floor(u * (span + 1)): the middle of the start's bin gives it exactly
        out.append(clip_positions(n, clip_length, "contiguous", (start + 0.5) / (span + 1)))
    return out


@dataclass
class FaceScore:
    """One scored face.

    Attributes:
        frame: 0-based frame index in the video (0 for an image).
        time_s: the frame's time in seconds (0.0 for an image).
        face: rank of the face in its frame (0 = most confident detection).
        box: ``[x1, y1, x2, y2]`` detector box, frame pixels.
        detection_prob: MTCNN's face probability.
        p_fake: the network's P(fake) for the crop; None for a clip model, which scores clips, not faces (see
            :attr:`InputResult.clips`).
    """

    frame: int
    time_s: float
    face: int
    box: list[float]
    detection_prob: float
    p_fake: float | None


@dataclass
class InputResult:
    """What :class:`Predictor` found for one input file.

    Attributes:
        path: the input file.
        kind: ``image`` or ``video``.
        status: ``ok``, ``no_face`` (no face detected anywhere) or ``error`` (unreadable / undecodable, or an
            image given to a clip model).
        message: why, for ``no_face`` / ``error`` (names the file); empty when ok.
        p_fake: P(fake) of the input (image: its most suspicious face; video: aggregated frames, or clips for a
            clip model), or None.
        decision: ``fake`` / ``real``, or None when not ok.
        confidence: probability of the decided class, or None.
        frames: ``[{"frame", "time_s", "p_fake"}]`` per frame with a face (videos and images alike); empty for a
            clip model.
        clips: clip models only, per clip in order: ``{"clip": k, "frames": [frame indices of its faces],
            "length": valid faces, "padding": repeats of the last face, "start_s", "end_s", "p_fake"}``.
        faces: every scored face (:class:`FaceScore`; for a clip model the faces its clips were made of).
        frames_sampled: frames decoded and searched (1 for an image).
    """

    path: str
    kind: str
    status: str = "ok"
    message: str = ""
    p_fake: float | None = None
    decision: str | None = None
    confidence: float | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    faces: list[FaceScore] = field(default_factory=list)
    frames_sampled: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (faces as dicts)."""
        return asdict(self)


def collect_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """Expand inputs into ``(file, kind)`` pairs: files as given, folders recursively (sorted), by suffix.

    A file with an unknown suffix is kept as ``unknown`` (reported as an error, not silently dropped); inside a
    folder such files are skipped.

    Raises:
        PredictError: a path that does not exist, or no input file at all.
    """
    out: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                kind = _kind(f)
                if kind != "unknown":
                    out.append((f, kind))
        elif p.exists():
            out.append((p, _kind(p)))
        else:
            raise PredictError(f"input {p} does not exist")
    if not out:
        raise PredictError(f"no image or video file in {', '.join(str(i) for i in inputs)} (images: "
                           f"{', '.join(IMAGE_SUFFIXES)}; videos: {', '.join(VIDEO_SUFFIXES)})")
    return out


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else "unknown"


def _decide(p: float, threshold: float) -> tuple[str, float]:
    fake = p > threshold
    return ("fake" if fake else "real"), (p if fake else 1.0 - p)


#: How a clip model's video is cut into clips: ``evaluation`` (the clips ``evaluate.py`` scores) or ``cover``.
CLIP_MODES = ("evaluation", "cover")


class Predictor:
    """Scores images and videos with a :class:`DetectorModel` after training's face extraction.

    A frame model scores every face; a clip model scores clips of a video's faces and refuses images (see the
    module docstring). Unless told otherwise, a video is read as the checkpoint's training faces were extracted
    (:attr:`DetectorModel.extraction`: the number of frames, the frame sampling, the detector settings, the
    margin), so a video's P(fake) is the one ``evaluate.py`` reports for it on data prepared with those settings.

    Args:
        model: from :func:`load_detector`.
        num_frames: frames sampled per video (0: every frame; None: the checkpoint's extraction ``num_frames``,
            else :data:`DEFAULT_NUM_FRAMES`).
        max_faces: faces scored per frame, most confident first.
        batch_size: crops per forward pass.
        detector: a :class:`~faceforge.data.detection.extraction.FaceDetector` (default: the checkpoint's
            extraction settings on the CPU, else the detector's defaults, as training's extraction).
        crops: the inputs are already face crops (as the MesoNet test images): no detection, a resize to the
            network's size only (OpenCV INTER_AREA).
        clips: for a clip model, ``"evaluation"`` (default): the checkpoint's ``clips_per_video`` clips placed by
            its ``clip_sampling`` as evaluation places them (:meth:`clip_positions_for`); ``"cover"``: clips of
            ``T`` consecutive faces that together cover every face (:func:`covering_clip_positions`).

    Raises:
        PredictError: ``num_frames < 0``, ``max_faces < 1``, ``batch_size < 1`` or an unknown ``clips``.
    """

    def __init__(self, model: DetectorModel, num_frames: int | None = None, max_faces: int = 1,
                 batch_size: int = 32, detector: Any | None = None, crops: bool = False,
                 clips: str = "evaluation") -> None:
        if num_frames is None:
            num_frames = int(model.extraction.get("num_frames", DEFAULT_NUM_FRAMES))
        if num_frames < 0 or max_faces < 1 or batch_size < 1:
            raise PredictError(f"num_frames must be >= 0, max_faces and batch_size >= 1 (got {num_frames}, "
                               f"{max_faces}, {batch_size})")
        if clips not in CLIP_MODES:
            raise PredictError(f"clips must be one of {CLIP_MODES}, got {clips!r}")
        self.model = model
        self.num_frames = int(num_frames)
        self.max_faces = int(max_faces)
        self.batch_size = int(batch_size)
        self.crops = bool(crops)
        self.clips = clips
        if detector is None and not crops:
            from faceforge.data.detection.extraction import FaceDetector

            detector = FaceDetector(device="cpu", keep=self.max_faces, **model.extraction.get("detector", {}))
        self.detector = detector

    # ---------------------------------------------------------------- scoring
    @torch.no_grad()
    def score_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """P(fake) of (S, S, 3) uint8 RGB crops at the network's size, as a (N,) float64 array."""
        if not crops:
            return np.zeros(0, dtype=np.float64)
        out = []
        for i in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(np.stack(crops[i:i + self.batch_size])).permute(0, 3, 1, 2).contiguous()
            out.append(torch.sigmoid(self.model.task(batch).float()).double().numpy())
        return np.concatenate(out)

    @torch.no_grad()
    def score_clips(self, clips: Sequence[np.ndarray], lengths: Sequence[int]) -> np.ndarray:
        """P(fake) of clips with a clip model, as a (N,) float64 array.

        Args:
            clips: uint8 RGB ``(T, S, S, 3)`` stacks at the network's size (padded to ``T`` with the last face).
            lengths: valid faces of each clip (1..T); the network ignores the padding.
        """
        if not clips:
            return np.zeros(0, dtype=np.float64)
        out = []
        for i in range(0, len(clips), self.batch_size):
            batch = torch.from_numpy(np.stack(clips[i:i + self.batch_size])).permute(0, 1, 4, 2, 3).contiguous()
            lens = torch.as_tensor(list(lengths[i:i + self.batch_size]), dtype=torch.int64)
            out.append(torch.sigmoid(self.model.task(batch, lens).float()).double().numpy())
        return np.concatenate(out)

    def faces_in(self, frame: np.ndarray) -> list[tuple[np.ndarray, list[float], float]]:
        """The face crops of one (H, W, 3) uint8 RGB frame: ``(crop, box, detection prob)`` per face."""
        from faceforge.data.core.image_io import resize_image
        from faceforge.data.detection.extraction import crop_face

        size = self.model.image_size
        if self.crops:
            h, w = frame.shape[:2]
            return [(resize_image(frame, size), [0.0, 0.0, float(w), float(h)], 1.0)]
        found = []
        for det in self.detector.detect([frame])[0][: self.max_faces]:
            crop, _ = crop_face(frame, det.box, margin=self.model.margin, size=size)
            found.append((crop, [float(v) for v in det.box], float(det.prob)))
        return found

    def _finish(self, result: InputResult, per_frame: list[tuple[int, float, list]]) -> InputResult:
        """Score the faces of ``per_frame`` = ``[(frame index, time, faces)]`` and fill ``result``."""
        crops = [c for _, _, faces in per_frame for c, _, _ in faces]
        probs = self.score_crops(crops)
        k = 0
        for index, t, faces in per_frame:
            scores = []
            for rank, (_, box, det_prob) in enumerate(faces):
                p = float(probs[k])
                k += 1
                scores.append(p)
                result.faces.append(FaceScore(frame=index, time_s=round(t, 4), face=rank, box=box,
                                              detection_prob=det_prob, p_fake=p))
            if scores:
                result.frames.append({"frame": index, "time_s": round(t, 4), "p_fake": max(scores)})
        if not result.frames:
            where = f"{result.frames_sampled} sampled frames" if result.kind == "video" else "the image"
            result.status, result.message = "no_face", f"{result.path}: no face found in {where}"
            return result
        self._conclude(result, [f["p_fake"] for f in result.frames])
        return result

    def _conclude(self, result: InputResult, scores: list[float]) -> None:
        """Set the input's P(fake), decision and confidence from its frame (or clip) scores."""
        item_p = torch.tensor(scores, dtype=torch.float32)
        if result.kind == "video" and len(item_p) > 1:
            from faceforge.metrics.detection import aggregate_by_video

            zeros = torch.zeros(len(item_p), dtype=torch.long)
            vp, _, _ = aggregate_by_video(item_p, zeros, zeros, how=self.model.video_aggregation,
                                          threshold=self.model.threshold)
            p = float(vp[0])
        else:
            p = float(item_p.max())
        result.p_fake = p
        result.decision, result.confidence = _decide(p, self.model.threshold)

    def _finish_clips(self, result: InputResult, per_frame: list[tuple[int, float, list]]) -> InputResult:
        """Clip-model scoring of a video's ``per_frame`` faces (see the module docstring) into ``result``."""
        used = [(index, t, faces[0]) for index, t, faces in per_frame if faces]  # most confident face per frame
        for index, t, (_, box, det_prob) in used:
            result.faces.append(FaceScore(frame=index, time_s=round(t, 4), face=0, box=box,
                                          detection_prob=det_prob, p_fake=None))
        if not used:
            result.status = "no_face"
            result.message = f"{result.path}: no face found in {result.frames_sampled} sampled frames"
            return result
        length = int(self.model.clip_length)  # type: ignore[arg-type]
        placed = self.clip_positions_for(len(used))
        stacks, lengths = [], []
        for pos in placed:
            take = np.r_[pos, np.full(length - len(pos), pos[-1], dtype=np.int64)]  # pad as training does
            stacks.append(np.stack([used[j][2][0] for j in take.tolist()]))
            lengths.append(len(pos))
        probs = self.score_clips(stacks, lengths)
        for k, (pos, p) in enumerate(zip(placed, probs.tolist())):
            first, last = used[int(pos[0])], used[int(pos[-1])]
            result.clips.append({"clip": k, "frames": [used[j][0] for j in pos.tolist()], "length": len(pos),
                                 "padding": length - len(pos), "start_s": round(first[1], 4),
                                 "end_s": round(last[1], 4), "p_fake": float(p)})
        self._conclude(result, [c["p_fake"] for c in result.clips])
        return result

    def clip_positions_for(self, n: int) -> list[np.ndarray]:
        """Where a clip model's clips lie among a video's ``n`` faces (positions in frame order).

        ``clips="evaluation"``: clip ``k`` of ``K = clips_per_video`` takes
        :func:`~faceforge.data.detection.clips.clip_positions` ``(n, T, clip_sampling, (k + 0.5) / K)``, exactly
        what :class:`~faceforge.data.detection.clips.FaceClipDataset` serves in validation and test;
        ``clips="cover"``: :func:`covering_clip_positions`. A video with ``n <= T`` faces gets one clip of all of
        them (evaluation's ``K`` clips of a short video are all that same clip).

        Returns:
            int64 arrays of ``min(n, T)`` strictly increasing positions in ``[0, n)``, one per clip.

        Raises:
            ValueError: ``n < 1``, or a frame model (no ``clip_length``).
        """
        from faceforge.data.detection.clips import clip_positions

        if self.model.clip_length is None:
            raise ValueError(f"{self.model.architecture} is a frame model: it has no clips")
        length = int(self.model.clip_length)
        if self.clips == "cover":
            return covering_clip_positions(n, length)
        if n < 1:
            raise ValueError(f"need n >= 1, got {n}")
        if n <= length:
            return [clip_positions(n, length, "contiguous", 0.0)]
        k_total = self.model.clips_per_video
        return [clip_positions(n, length, self.model.clip_sampling, (k + 0.5) / k_total) for k in range(k_total)]

    # ---------------------------------------------------------------- inputs
    def predict_image(self, path: str | Path, data: bytes | None = None) -> InputResult:
        """Score one image file (or its bytes ``data``, named by ``path``); never raises for bad input."""
        from faceforge.data.core.image_io import read_rgb_image

        result = InputResult(path=str(path), kind="image", frames_sampled=1)
        if self.model.is_clip_model:
            result.status = "error"
            result.message = (f"{path}: {self.model.architecture} is a clip model: it scores clips of "
                              f"{self.model.clip_length} faces of a video and cannot score a single "
                              f"image; give it a video, or use a frame model (e.g. model=meso4) for images")
            return result
        try:
            image = read_rgb_image(path, data=data)
        except FaceforgeError as exc:
            result.status, result.message = "error", str(exc)
            return result
        return self._finish(result, [(0, 0.0, self.faces_in(image))])

    def predict_video(self, path: str | Path, progress: bool | None = None) -> InputResult:
        """Score a video's sampled frames; never raises for bad input (``status`` says what went wrong).

        Frames: ``num_frames`` of them chosen by :func:`~faceforge.data.detection.extraction.sample_frame_indices`
        with the checkpoint's extraction ``sampling`` (default ``evenly``), ``stride`` and ``seed``; the seeded
        modes (``stride``, ``contiguous``) key their draw by the file name, so they pick the same kind of frames as
        the dataset's extraction but not necessarily the same ones (its key is the dataset's video id).

        Args:
            path: the video file.
            progress: show a tqdm bar over its frames (None: only on a terminal).
        """
        from tqdm import tqdm

        from faceforge.data.detection.extraction import FrameStream, probe_video, sample_frame_indices

        result = InputResult(path=str(path), kind="video")
        try:
            info = probe_video(path)
            n = info.num_frames if self.num_frames == 0 else self.num_frames
            ex = self.model.extraction
            indices = sample_frame_indices(info.num_frames, n, mode=ex.get("sampling", "evenly"),
                                           stride=ex.get("stride", 1), seed=ex.get("seed", 0), key=Path(path).name)
            per_frame = []
            with FrameStream(path, indices) as stream, \
                    tqdm(total=len(indices), desc=Path(path).name, unit="frame", leave=False,
                         disable=None if progress is None else not progress) as bar:
                for index, frame in stream:
                    t = index / info.fps if info.fps > 0 else 0.0
                    per_frame.append((int(index), t, self.faces_in(frame)))
                    bar.update(1)
            result.frames_sampled = len(per_frame)
            if not per_frame:
                result.status = "error"
                result.message = f"{path}: no frame could be decoded ({stream.reason or 'empty stream'})"
                return result
        except FaceforgeError as exc:
            result.status, result.message = "error", str(exc)
            return result
        if self.model.is_clip_model:
            return self._finish_clips(result, per_frame)
        return self._finish(result, per_frame)

    def predict(self, inputs: Sequence[str | Path], progress: bool | None = None,
                on_result: Callable[[InputResult], None] | None = None) -> list[InputResult]:
        """Score every image and video in ``inputs`` (files or folders); the bad ones are reported, not raised.

        Args:
            inputs: files and folders (see :func:`collect_inputs`).
            progress: tqdm bars (None: only on a terminal; over the files when there are several).
            on_result: called with each result as it is ready.

        Raises:
            PredictError: a path that does not exist, or no input file at all.
        """
        from tqdm import tqdm

        files = collect_inputs(inputs)
        results = []
        bar_off = (len(files) < 2) if progress is None else not progress
        for path, kind in tqdm(files, desc="inputs", unit="file", disable=bar_off or None):
            if kind == "image":
                r = self.predict_image(path)
            elif kind == "video":
                r = self.predict_video(path, progress=progress)
            else:
                r = InputResult(path=str(path), kind="unknown", status="error",
                                message=f"{path}: not an image or video file (suffix {path.suffix!r}; images: "
                                        f"{', '.join(IMAGE_SUFFIXES)}; videos: {', '.join(VIDEO_SUFFIXES)})")
            results.append(r)
            if on_result is not None:
                on_result(r)
        return results


# -------------------------------------------------------------------- output
def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


#: Clips a table note lists by their frames before it only counts the rest.
MAX_TABLE_CLIPS = 4


def _clips_note(clips: Sequence[dict[str, Any]]) -> str:
    """``"3 clips: frames 0-93 (0.71), ..."`` for a clip model's result (the frames each clip covers)."""
    shown = ", ".join(f"frames {c['frames'][0]}-{c['frames'][-1]} ({c['p_fake']:.3f})"
                      for c in clips[:MAX_TABLE_CLIPS])
    more = f", +{len(clips) - MAX_TABLE_CLIPS} more" if len(clips) > MAX_TABLE_CLIPS else ""
    return f"{len(clips)} clip{'s' if len(clips) != 1 else ''}: {shown}{more}"


def format_table(results: Iterable[InputResult]) -> str:
    """A plain-text table: one line per input (file, kind, faces, P(fake), decision, confidence, note); for a clip
    model the note lists the clips (first and last frame, P(fake))."""
    rows = [("input", "kind", "faces", "P(fake)", "decision", "confidence", "note")]
    for r in results:
        note = r.message.replace(r.path + ": ", "", 1) if r.message else _clips_note(r.clips) if r.clips else ""
        rows.append((r.path, r.kind, str(len(r.faces)), _fmt(r.p_fake), r.decision or r.status,
                     _fmt(r.confidence), note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_to_json(results: Sequence[InputResult], model: DetectorModel | None = None) -> dict[str, Any]:
    """The results as one JSON-able dict (``model`` settings, ``inputs`` with frames and faces)."""
    info = None
    if model is not None:
        info = {"path": model.path, "source": model.source, "architecture": model.architecture,
                "image_size": model.image_size, "margin": model.margin, "threshold": model.threshold,
                "video_aggregation": model.video_aggregation, "clip_length": model.clip_length,
                "clip_sampling": model.clip_sampling, "clips_per_video": model.clips_per_video,
                "extraction": model.extraction}
    return {"model": info, "inputs": [r.to_dict() for r in results]}


def results_to_csv(results: Sequence[InputResult]) -> str:
    """CSV text, one row per scored face (frame models) or per clip (clip models: ``clip``, ``clip_frames`` = the
    frame indices it covers separated by spaces, ``p_fake_clip``; ``frame`` / ``time_s`` are its first face's);
    inputs with nothing scored get one row with empty face and clip columns."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input", "kind", "status", "p_fake_input", "decision", "confidence", "frame", "time_s", "face",
                "x1", "y1", "x2", "y2", "detection_prob", "p_fake_face", "clip", "clip_frames", "p_fake_clip",
                "message"])
    for r in results:
        head = [r.path, r.kind, r.status, _fmt(r.p_fake, 6) if r.p_fake is not None else "", r.decision or "",
                _fmt(r.confidence, 6) if r.confidence is not None else ""]
        if r.clips:
            for c in r.clips:
                w.writerow(head + [c["frames"][0], c["start_s"]] + [""] * 7
                           + [c["clip"], " ".join(str(i) for i in c["frames"]), f"{c['p_fake']:.6f}", r.message])
            continue
        if not r.faces:
            w.writerow(head + [""] * 12 + [r.message])
        for f in r.faces:
            w.writerow(head + [f.frame, f.time_s, f.face, *(f"{b:.2f}" for b in f.box), f"{f.detection_prob:.6f}",
                               "" if f.p_fake is None else f"{f.p_fake:.6f}", "", "", "", r.message])
    return buf.getvalue()


def write_results(results: Sequence[InputResult], json_path: str | Path | None = None,
                  csv_path: str | Path | None = None, model: DetectorModel | None = None) -> list[Path]:
    """Write the results as JSON and/or CSV, atomically; returns the written paths."""
    from faceforge.utils.atomic import atomic_write_json, atomic_write_text

    written = []
    if json_path is not None:
        atomic_write_json(json_path, results_to_json(results, model))
        written.append(Path(json_path))
    if csv_path is not None:
        atomic_write_text(csv_path, results_to_csv(results))
        written.append(Path(csv_path))
    return written
