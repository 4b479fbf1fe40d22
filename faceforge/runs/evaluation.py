"""Evaluation run: rebuild a task from a checkpoint (``weights_only=True``, through faceforge's registry: see
:mod:`faceforge.tasks.checkpointing`) or from imported weights (the MesoNet authors' Keras ``.h5`` files), test it
on a data module, and write a reproducible results JSON (metrics, config, commit, weights kind and hash, data
summary), a markdown and CSV table, and the task's own test outputs (per-video predictions for detection).

A task used here provides ``test_report`` (filled by ``trainer.test``), ``result_table(report, dataset) ->
(rows, columns)`` and ``write_test_outputs(output_dir, datamodule) -> list[Path]``."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from faceforge.reporting.tables import csv_table, markdown_table
from faceforge.runs.common import RunConfigError, instantiate_group, project_root
from faceforge.runs.config_checks import check_model_data_pairing, check_required_settings, hydra_choice
from faceforge.runs.input_needs import apply_input_needs, command_line_keys, legacy_input_needs, plain_input_needs
from faceforge.runs.resume import write_hydra_record
from faceforge.tasks.checkpointing import CheckpointError, load_task, read_checkpoint
from faceforge.tasks.detection import VIDEO_AGGREGATIONS
from faceforge.utils.atomic import atomic_write_json, atomic_write_text, check_destination
from faceforge.utils.hashing import file_sha256
from faceforge.utils.run_info import collect_run_info, write_run_info

log = logging.getLogger(__name__)


def checkpoint_input_needs(ckpt: dict[str, Any], source: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """What the checkpoint's network needs of the data: its task's ``input`` hyperparameter (``model.input`` when it
    was trained), or for checkpoints written before that, the input settings of its data module's hyperparameters
    (:func:`faceforge.runs.input_needs.legacy_input_needs`). Returns (needs, where they came from). ``source``, the
    checkpoint's path, starts the error messages.

    Raises:
        CheckpointError: the saved values are not plain settings (a ``_target_``, an interpolation, an object).
    """
    hparams = ckpt.get("hyper_parameters") or {}
    try:
        if isinstance(hparams, dict) and hparams.get("input") is not None:
            return plain_input_needs(hparams["input"], "the checkpoint's hyper_parameters.input"), "input"
        return legacy_input_needs(ckpt), "datamodule_hyper_parameters"
    except RunConfigError as exc:
        raise CheckpointError(f"{source}: {exc}" if source is not None else str(exc)) from None


# ------------------------------------------------------------------------------------------------------------------
# Imported weights (the MesoNet authors' Keras files)
# ------------------------------------------------------------------------------------------------------------------

#: What an imported weight file is, for the results' ``weights.source``.
KERAS_H5_SOURCE = "MesoNet authors' Keras h5"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_keras_h5(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file (by its signature, whatever its suffix): a Keras weight file to import,
    not a faceforge checkpoint. A missing or unreadable file is not."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == _HDF5_MAGIC
    except OSError:
        return False


def _imported_mesonet_task(cfg: DictConfig, path: Path) -> tuple[Any, dict[str, Any]]:
    """A DetectionTask around the authors' Keras weights (Meso-4 or MesoInception-4, told from the file's layers),
    and the ``weights`` record of the results.

    Raises:
        faceforge.models.meso.KerasWeightsError: the file is not a MesoNet Keras weight file.
    """
    import yaml

    from faceforge.models.meso import MESONET_INPUT_SIZE, from_keras_h5
    from faceforge.registry import registry_name
    from faceforge.tasks.detection import DetectionTask

    net = from_keras_h5(path)
    arch = registry_name(type(net)) or type(net).__name__
    slope = float(getattr(net.head.act, "negative_slope", 0.1))
    spec = {"_target_": arch, "head_activation": net.head_activation, "negative_slope": slope}
    task = DetectionTask(net=net, video_aggregation=str(cfg.get("video_aggregation") or "mean"),
                         net_spec=yaml.safe_dump(spec, sort_keys=False))
    weights = {"kind": "imported", "source": KERAS_H5_SOURCE, "format": "keras_h5", "architecture": arch,
               "file": path.name, "path": str(path.resolve()), "sha256": file_sha256(path),
               "preprocessing": {"image_size": MESONET_INPUT_SIZE, "scale": "1/255", "channels": "RGB",
                                 "resize": "none for crops stored at 256 px; test_crops.other_size counts the "
                                           "others, which the data module resizes with OpenCV INTER_AREA (the "
                                           "authors' pipeline: PIL NEAREST)"},
               "output": "sigmoid(logit) = P(fake) = 1 - P_keras(real)"}
    return task, weights


def _prepare_data_for_mesonet(cfg: DictConfig, explicit: set[str]) -> None:
    """Serve what the authors' networks expect: 256 x 256 single frames, no eval transform.

    Raises:
        RunConfigError: the command line asks for another image size, or clips.
    """
    from faceforge.models.meso import MESONET_INPUT_SIZE

    data = cfg.data
    if "image_size" in data and data.image_size != MESONET_INPUT_SIZE:
        if "data.image_size" in explicit:
            raise RunConfigError(f"data.image_size={data.image_size}: the MesoNet authors' networks take "
                                 f"{MESONET_INPUT_SIZE}x{MESONET_INPUT_SIZE} crops; drop the override")
        data.image_size = MESONET_INPUT_SIZE
    if data.get("clip_length") is not None:
        raise RunConfigError(f"data.clip_length={data.clip_length}: the MesoNet authors' networks score single "
                             f"frames; set data.clip_length=null")
    if data.get("eval_transform") is not None:
        warnings.warn("data.eval_transform is set: it changes the crops the MesoNet authors' weights see (their "
                      "preprocessing is a resize to 256 and 1/255 only)", stacklevel=2)


def _check_crop_sizes(datamodule: Any, size: int, max_files: int = 64) -> dict[str, int]:
    """Read the stored size (file header only) of up to ``max_files`` test crops, evenly spaced; return
    ``{"checked": n, "other_size": m}``. Crops not stored at ``size`` are resized by the data module (OpenCV
    INTER_AREA), not with the authors' PIL NEAREST: a warning says so."""
    from PIL import Image

    index = getattr(datamodule, "split_indexes", {}).get("test")
    if index is None or not len(index):
        return {"checked": 0, "other_size": 0}
    paths = index.columns["crop_path"]
    step = max(1, len(paths) // max_files)
    checked = other = 0
    for rel in paths[::step][:max_files]:
        try:
            with Image.open(Path(index.root) / str(rel)) as im:
                other += im.size != (size, size)
                checked += 1
        except OSError:
            continue
    if other:
        warnings.warn(f"{other} of {checked} test crops checked are not stored at {size}x{size} px: the data module "
                      f"resizes them with OpenCV INTER_AREA, not with the MesoNet authors' PIL NEAREST; extract faces "
                      f"at data.image_size={size} to match the authors' preprocessing", stacklevel=2)
    return {"checked": checked, "other_size": other}


def _check_task_fits_data(task: Any, cfg: DictConfig, ckpt_path: Path) -> None:
    """Refuse data of another kind than the checkpoint's task needs (see
    :func:`faceforge.runs.config_checks.check_model_data_pairing`)."""
    data_choice = hydra_choice("data")
    check_model_data_pairing(type(task).__name__, str(cfg.data.get("_target_", "")),
                             model_label=f"the checkpoint {ckpt_path.name}",
                             data_label=f"data={data_choice}" if data_choice else None)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.data``'s test split; return the results dict that is also written.

    ``ckpt_path`` is a faceforge checkpoint (``.ckpt``, rebuilt through the registry with ``weights_only=True``) or
    an HDF5 file of the MesoNet authors' Keras weights (Meso-4 or MesoInception-4, told from its layers; evaluated
    at 256 px with their preprocessing). ``results.json`` records which in ``weights``: ``{"kind": "trained", ...}``
    or ``{"kind": "imported", "source": "MesoNet authors' Keras h5", "sha256": ...}``; the markdown and CSV tables
    carry a ``weights`` column.

    Raises:
        RunConfigError: no checkpoint given, a checkpoint whose task needs another kind of data (a detector on
            ``data=synthetic_3d``), a mandatory data setting left unset (``data.root``), or data settings the
            imported network cannot take.
        faceforge.tasks.checkpointing.CheckpointError: the checkpoint cannot be read or rebuilt safely.
        faceforge.models.meso.KerasWeightsError: an HDF5 file that is not a MesoNet Keras weight file.
    """
    if not cfg.get("ckpt_path"):
        raise RunConfigError("evaluate.py needs ckpt_path=/path/to/checkpoint.ckpt (or a MesoNet authors' .h5)")
    output_dir = Path(cfg.paths.output_dir)
    # ---- checks: nothing is written or logged (evaluate.log is created at the first log line) before they pass
    inherited: dict[str, Any] = {}
    ckpt_path = Path(str(cfg.ckpt_path))
    explicit = command_line_keys()
    imported = is_keras_h5(ckpt_path)
    if imported:
        task, weights = _imported_mesonet_task(cfg, ckpt_path)
        _check_task_fits_data(task, cfg, ckpt_path)
        _prepare_data_for_mesonet(cfg, explicit)
        trained_on = f"imported:{ckpt_path.name}"
    else:
        ckpt = read_checkpoint(ckpt_path)
        needs, _ = checkpoint_input_needs(ckpt, ckpt_path)
        task = load_task(ckpt, source=ckpt_path)
        _check_task_fits_data(task, cfg, ckpt_path)
        needs = {k: v for k, v in needs.items() if k in cfg.data}  # e.g. a batch size the data does not take
        inherited = apply_input_needs(cfg, needs, explicit, where=f"the checkpoint {ckpt_path.name}'s input")
        info = ckpt.get("faceforge") or {}
        trained_on = str(info.get("trained_on", "") or "")
        weights = {"kind": "trained", "source": "faceforge checkpoint", "format": "lightning_ckpt",
                   "architecture": type(task.net).__name__, "file": ckpt_path.name,
                   "path": str(ckpt_path.resolve()), "sha256": file_sha256(ckpt_path),
                   "faceforge_version": str(info.get("version", "") or "")}
    check_required_settings(cfg, "evaluate.py")
    if cfg.get("video_aggregation") and str(cfg.video_aggregation) not in VIDEO_AGGREGATIONS:
        raise RunConfigError(f"video_aggregation={cfg.video_aggregation}: use one of {', '.join(VIDEO_AGGREGATIONS)}")
    check_destination(Path(str(cfg.results_path)))  # before the test pass, not after it
    _apply_mesh_overrides(task, cfg)  # a 3D checkpoint's mesh options (+model.mesh_frame=..., +model.mesh_nme=...)
    pl.seed_everything(cfg.seed, workers=True)
    if inherited:
        log.info("data settings taken from the checkpoint's input needs: %s", inherited)
    write_run_info(output_dir, OmegaConf.to_yaml(cfg, resolve=True), cfg.seed, project_root())
    write_hydra_record(output_dir, cfg)  # conf/evaluate.yaml sets hydra.output_subdir: null: written after the checks

    if cfg.get("video_aggregation"):
        task.hparams.video_aggregation = str(cfg.video_aggregation)
    datamodule = instantiate(cfg.data, _convert_="all")
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=instantiate_group(cfg.get("logger")) or False,
                                      callbacks=[], default_root_dir=str(output_dir))
    trainer.test(task, datamodule=datamodule)
    report = task.test_report
    if report is None:
        raise RunConfigError(f"data {cfg.data.name}: the test split produced no predictions")
    if imported:
        weights["preprocessing"]["test_crops"] = _check_crop_sizes(datamodule,
                                                                   weights["preprocessing"]["image_size"])

    results = {
        "trained_on": trained_on,
        "tested_on": str(cfg.data.name),
        "weights": weights,
        "checkpoint": {"path": weights["path"], "sha256": weights["sha256"], "kind": weights["kind"],
                       "hyper_parameters": {k: v for k, v in task.hparams.items()}},
        "data": {"name": cfg.data.name,
                 "data_dir": str(cfg.data.get("faces_dir", cfg.data.get("volumes_dir", ""))),
                 "report": getattr(datamodule, "report", None),
                 # crops found unreadable while loading (cache_crops=false) and replaced, see FaceCropDataset
                 "unreadable_while_loading": (datamodule.load_report()
                                              if callable(getattr(datamodule, "load_report", None)) else {})},
        "metrics": report,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "provenance": collect_run_info(cfg.seed, project_root()),
    }
    results_path = Path(cfg.results_path)
    atomic_write_json(results_path, results)
    rows, columns = task.result_table(report, str(cfg.data.name))
    label = weights_label(weights)
    rows = [{**row, "weights": label} for row in rows]
    columns = (*columns, ("weights", "weights"))
    table = markdown_table(rows, columns)
    atomic_write_text(results_path.with_suffix(".md"), table)
    atomic_write_text(results_path.with_suffix(".csv"), csv_table(rows, columns))
    task.write_test_outputs(results_path.parent, datamodule)
    print(table)
    log.info("Results written to %s", results_path)
    return results


def _apply_mesh_overrides(task: Any, cfg: DictConfig) -> None:
    """``+model.mesh_frame=display|vrn_authors`` and ``+model.mesh_nme=true|false`` override a 3D checkpoint's
    mesh options (:class:`faceforge.tasks.reconstruction.VolumeRegressionTask`); other tasks refuse them.

    Raises:
        RunConfigError: an override for a task without that option, or an unknown mesh frame.
    """
    from faceforge.geometry.volume_mesh import MESH_FRAMES  # here: trimesh and scikit-image only when needed

    model = cfg.get("model") or {}
    for key in ("mesh_frame", "mesh_nme"):
        value = model.get(key)
        if value is None:
            continue
        if not hasattr(task, "mesh_nme_enabled"):
            raise RunConfigError(f"model.{key}={value} applies to 3D reconstruction checkpoints only, not to "
                                 f"{type(task).__name__}")
        if key == "mesh_frame" and str(value) not in MESH_FRAMES:
            raise RunConfigError(f"model.mesh_frame must be one of {', '.join(MESH_FRAMES)}, got {value!r}")
        task.hparams[key] = str(value) if key == "mesh_frame" else bool(value)


def weights_label(weights: dict[str, Any]) -> str:
    """One table cell naming the weights: ``trained (epoch_007.ckpt)`` or
    ``imported: MesoNet authors' Keras h5 (Meso4_DF.h5)``."""
    if weights.get("kind") == "imported":
        return f"imported: {weights.get('source', '')} ({weights.get('file', '')})"
    return f"trained ({weights.get('file', '')})"
