"""Checks of a composed run configuration that refuse a run in one line before anything is built or written:
a model paired with data of the other kind (a detector on 3D volumes, a VRN on face crops), and mandatory
settings left unset (``???``, e.g. ``data.root``).

``train.py`` and ``evaluate.py`` print the :class:`~faceforge.runs.common.RunConfigError` these raise as
``faceforge: RunConfigError: ...`` and exit with status 2.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from faceforge.runs.common import RunConfigError

__all__ = ["DATA_KINDS", "DataKind", "check_model_data_pairing", "check_model_input_size", "check_required_settings",
           "fitting_data_configs", "hydra_choice", "missing_settings", "unresolvable_settings_refused"]


@dataclass(frozen=True)
class DataKind:
    """One kind of data and the tasks that train on it.

    Attributes:
        tasks: class names of the LightningModules that need this data (``("DetectionTask",)``).
        datamodule: class name of the data module they need (``FaceDataModule``).
        description: the data in words, for messages.
        data_configs: the ``conf/data`` entries that build such a data module.
    """

    tasks: tuple[str, ...]
    datamodule: str
    description: str
    data_configs: tuple[str, ...]


#: Every task and the data it needs (tests/test_config_errors.py checks ``data_configs`` against conf/data).
DATA_KINDS: tuple[DataKind, ...] = (
    DataKind(("DetectionTask",), "FaceDataModule", "face-crop detection data",
             ("synthetic", "ffpp", "dfdc", "celebdf")),
    DataKind(("VolumeRegressionTask", "FaceGANTask"), "VolumeDataModule", "3D volume data",
             ("synthetic_3d", "w300lp", "aflw2000")),
)

#: Example values for settings that are often left unset, by setting and (for ``data.root``) data config.
_EXAMPLES: dict[str, dict[str | None, str]] = {
    "data.root": {"ffpp": "/path/to/FaceForensics++", "dfdc": "/path/to/dfdc", "celebdf": "/path/to/Celeb-DF-v2",
                  "w300lp": "/path/to/300W_LP", "aflw2000": "/path/to/AFLW2000"},
    "data.model_dir": {None: "/path/to/3ddfa"},
    "data.noneck_dir": {None: "/path/to/3DDFA_V2/configs"},
    "ckpt_path": {None: "/path/to/run/checkpoints/epoch_007.ckpt"},
}


def check_model_input_size(net_target: str, image_size: Any, model_label: str | None = None) -> None:
    """Refuse a network that takes one fixed input size (its class attribute ``input_size``, e.g. MesoNet's 256)
    paired with data served at another ``data.image_size``, before anything is built.

    Args:
        net_target: the network's ``_target_`` (``faceforge.models.meso.Meso4``); a target that cannot be imported
            or declares no ``input_size`` passes.
        image_size: the data's ``image_size`` (None passes).
        model_label: how the message names the model (``model=meso4``); default the class name.

    Raises:
        RunConfigError: the sizes differ; the message names both and the setting to change.
    """
    if image_size is None or not net_target:
        return
    try:
        from hydra.utils import get_class

        size = getattr(get_class(str(net_target)), "input_size", None)
    except Exception:  # noqa: BLE001 - an unknown target is reported where it is instantiated
        return
    if size is not None and int(image_size) != int(size):
        label = model_label or _class_name(net_target)
        raise RunConfigError(f"{label} ({_class_name(net_target)}) takes {size}x{size} crops but data.image_size="
                             f"{image_size}: set data.image_size={size}")


def _class_name(target: Any) -> str:
    return str(target or "").rsplit(".", 1)[-1]


def hydra_choice(group: str) -> str | None:
    """The config chosen for ``group`` (``model`` -> ``vrn``) in the running Hydra job; None outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except (ValueError, AttributeError):  # not running under Hydra
        return None


def _kind_of_task(task: str) -> DataKind | None:
    return next((k for k in DATA_KINDS if _class_name(task) in k.tasks), None)


def _kind_of_data(data_target: str) -> DataKind | None:
    return next((k for k in DATA_KINDS if k.datamodule == _class_name(data_target)), None)


def check_model_data_pairing(task_target: str, data_target: str, model_label: str | None = None,
                             data_label: str | None = None) -> None:
    """Refuse a task paired with a data module of another kind (a detector on 3D volumes, a VRN on face crops).

    Args:
        task_target: the task's class path or name (``cfg.model._target_`` or a checkpoint's task class).
        data_target: the data module's class path or name (``cfg.data._target_``).
        model_label: how the message names the model (``model=vrn``); default the task's class name.
        data_label: how the message names the data (``data=dfdc``); default the data module's class name.

    Tasks or data modules this module does not know pass unchecked.

    Raises:
        RunConfigError: the pair does not fit; the message names the data configs that fit the model.
    """
    need = _kind_of_task(task_target)
    have = _kind_of_data(data_target)
    if need is None or have is None or need is have:
        return
    model_label = model_label or _class_name(task_target)
    data_label = data_label or _class_name(data_target)
    fits = [f"data={name}" for name in need.data_configs]
    raise RunConfigError(f"{model_label} ({_class_name(task_target)}) needs {need.description} "
                         f"({need.datamodule}), but {data_label} is {have.description} ({have.datamodule}): use "
                         f"{', '.join(fits[:-1])} or {fits[-1]}")


def fitting_data_configs(task_target: str) -> tuple[str, ...]:
    """The ``conf/data`` entries a task can train on (``VolumeRegressionTask`` -> synthetic_3d, w300lp, aflw2000);
    empty for a task this module does not know."""
    kind = _kind_of_task(task_target)
    return kind.data_configs if kind is not None else ()


def missing_settings(cfg: DictConfig) -> list[str]:
    """Dotted keys of ``cfg`` whose value is the mandatory marker ``???`` (interpolations are not resolved, so a
    key that only points at a missing one is not listed); the ``hydra`` node is skipped."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        keys: Sequence[Any] = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            name = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{key}]"
            if not prefix and key == "hydra":
                continue
            if OmegaConf.is_missing(node, key):
                found.append(name)
                continue
            if OmegaConf.is_interpolation(node, key):
                continue
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
                walk(child, name + ".")

    walk(cfg, "")
    return found


def check_required_settings(cfg: DictConfig, script: str = "train.py", overrides: Sequence[str] | None = None
                            ) -> None:
    """Refuse a configuration with mandatory settings left unset (``???``), naming them with an example.

    Args:
        cfg: the composed run configuration.
        script: the command the example shows (``train.py`` or ``evaluate.py``).
        overrides: the command line's overrides, repeated in the example; default: those of the running Hydra
            job, else ``data=<chosen data config>``.

    Raises:
        RunConfigError: one or more settings are unset; the message names each and shows a command that sets
            them, e.g. ``python train.py data=ffpp data.root=/path/to/FaceForensics++``.
    """
    missing = missing_settings(cfg)
    if not missing:
        return
    data_name = hydra_choice("data") or (cfg.data.get("name") if "data" in cfg and not
                                         OmegaConf.is_missing(cfg.data, "name") else None)
    if overrides is None:
        overrides = _hydra_overrides()
        if overrides is None:
            overrides = [f"data={data_name}"] if data_name else []
    examples = []
    for key in missing:
        by_data = _EXAMPLES.get(key, {})
        value = by_data.get(data_name) or by_data.get(None) or f"/path/to/{key.rsplit('.', 1)[-1]}"
        examples.append(f"{key}={value}")
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in missing]
    names = ", ".join(missing)
    verb = "is" if len(missing) == 1 else "are"
    where = f" (data={data_name})" if data_name and any(k.startswith("data.") for k in missing) else ""
    raise RunConfigError(f"{names} {verb} not set{where}: add {'it' if len(missing) == 1 else 'them'} to the "
                         f"command, e.g. `python {script} {' '.join([*kept, *examples])}`")


def _hydra_overrides() -> list[str] | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, AttributeError):
        return None


@contextmanager
def unresolvable_settings_refused() -> Iterator[None]:
    """Turn OmegaConf's errors for a setting that cannot be resolved (a ``???`` value or an interpolation to a
    key that does not exist, met while the run builds its objects) into one-line :class:`RunConfigError` errors; the
    entry points wrap the run in it, as the last net behind :func:`check_required_settings` and
    :func:`check_model_data_pairing`.

    Raises:
        RunConfigError: naming the setting (``full_key``) and OmegaConf's reason.
    """
    try:
        yield
    except (MissingMandatoryValue, InterpolationResolutionError) as exc:
        key = getattr(exc, "full_key", None)
        reason = str(getattr(exc, "msg", None) or exc).splitlines()[0]
        raise RunConfigError(f"{key + ': ' if key else ''}{reason}; check the command's overrides and config "
                             f"choices") from None
