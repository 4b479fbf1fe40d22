"""faceforge's own registry of networks and tasks, and rebuilding a network from a spec without running foreign code.

A checkpoint names what built it (its network's spec in ``net_spec``, its task in ``faceforge.task``); rebuilding
from a checkpoint must never import or call anything the file chooses. So the classes a checkpoint may name are
listed here, by name, with the fixed module that defines each:

========================  ===================================================================
registry name             class
========================  ===================================================================
``Meso4``                 :class:`faceforge.models.meso.Meso4`
``MesoInception4``        :class:`faceforge.models.meso.MesoInception4`
``ResNeXtLSTM``           :class:`faceforge.models.resnext_lstm.ResNeXtLSTM`
``StackedHourglass``      :class:`faceforge.models.hourglass.StackedHourglass`
``VRN``                   :class:`faceforge.models.vrn.VRN`
``VRNGuided``             :class:`faceforge.models.vrn.VRNGuided`
``VRNMultitask``          :class:`faceforge.models.vrn.VRNMultitask`
``FaceGAN``               :class:`faceforge.models.facegan.FaceGAN`
``DetectionTask``         :class:`faceforge.tasks.detection.DetectionTask` (task)
``VolumeRegressionTask``  :class:`faceforge.tasks.reconstruction.VolumeRegressionTask` (task)
``FaceGANTask``           :class:`faceforge.tasks.facegan.FaceGANTask` (task)
========================  ===================================================================

A ``_target_`` in a spec is looked up here: either the registry name (``"VRN"``) or exactly the class's own path
(``"faceforge.models.vrn.VRN"``, as ``train.py`` writes it from the Hydra config). Anything else (``builtins.open``,
``torch.load``, another module's class of the same name) is refused before anything is imported. Modules are
imported from the fixed paths of this table, never from a string read from a file.

:func:`build_model` walks a spec (the YAML of a ``model.net`` Hydra config, already parsed into dicts and lists):
a dict with ``_target_`` becomes a registered network built with its other keys as keyword arguments, after checking
that every value is a primitive (bool, int, float, str, None, lists and string-keyed dicts of them) or a nested
registered network (``VRNGuided``'s ``landmark_net`` and ``vrn``), that every keyword is a parameter of the class,
and that no Hydra control key (``_args_``, ``_partial_``, ``_recursive_``, ``_convert_``, or any other
``_name_``) appears. ``hydra.utils.instantiate`` is never used for this. ``train.py`` still instantiates the user's
own Hydra config with Hydra (the user chose that code).

Adding a network: add its class here (one line in :data:`MODELS`) and a ``conf/model/*.yaml``; the test
``tests/test_checkpoint_security.py`` checks that every ``_target_`` of ``conf/model`` is registered.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from faceforge.errors import FaceforgeError

__all__ = [
    "MODELS", "TASKS", "RegistryEntry", "RegistryError", "SpecError", "build_model", "check_primitive",
    "model_class", "registry_name", "task_class",
]

#: Largest nesting depth and number of values :func:`build_model` / :func:`check_primitive` walk (a crafted YAML
#: can be self-referencing or exponentially aliased; a real spec has a few dozen values).
MAX_SPEC_DEPTH = 16
MAX_SPEC_VALUES = 10_000


class RegistryError(FaceforgeError, ValueError):
    """A name is not in faceforge's model or task registry (the message lists the registered names)."""


class SpecError(RegistryError):
    """A network spec or hyperparameter set holds something other than registered classes and primitive values
    (an unregistered ``_target_``, a Hydra control key, an unknown keyword, a non-primitive value)."""


@dataclass(frozen=True)
class RegistryEntry:
    """One registered class: its registry ``name`` and the fixed ``module`` and ``qualname`` that define it.

    Attributes:
        name: the registry name (the class name).
        module: the module that defines the class (imported only from this table).
        qualname: the class's name in that module.
        rebuild_kwargs: keyword arguments replaced when rebuilding from a checkpoint, whose own weights make them
            moot (e.g. ResNeXtLSTM's ``pretrained_weights``: an ImageNet file on the training machine, which the
            evaluating machine may not have and must not be made to read).
    """

    name: str
    module: str
    qualname: str
    rebuild_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The fully qualified class path (``faceforge.models.vrn.VRN``)."""
        return f"{self.module}.{self.qualname}"

    def load(self) -> type:
        """Import the module of this entry (a fixed faceforge module) and return the class."""
        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, type):  # pragma: no cover - a broken table, caught by the registry test
            raise RegistryError(f"registry entry {self.name!r} ({self.path}) is not a class")
        return obj


def _table(*entries: RegistryEntry) -> Mapping[str, RegistryEntry]:
    return MappingProxyType({e.name: e for e in entries})


#: Networks a checkpoint may name (registry name -> entry).
MODELS: Mapping[str, RegistryEntry] = _table(
    RegistryEntry("Meso4", "faceforge.models.meso", "Meso4"),
    RegistryEntry("MesoInception4", "faceforge.models.meso", "MesoInception4"),
    RegistryEntry("ResNeXtLSTM", "faceforge.models.resnext_lstm", "ResNeXtLSTM",
                  rebuild_kwargs=MappingProxyType({"pretrained_weights": None})),
    RegistryEntry("StackedHourglass", "faceforge.models.hourglass", "StackedHourglass"),
    RegistryEntry("VRN", "faceforge.models.vrn", "VRN"),
    RegistryEntry("VRNGuided", "faceforge.models.vrn", "VRNGuided"),
    RegistryEntry("VRNMultitask", "faceforge.models.vrn", "VRNMultitask"),
    RegistryEntry("FaceGAN", "faceforge.models.facegan", "FaceGAN"),
)

#: Tasks (LightningModules) a checkpoint may name (registry name -> entry).
TASKS: Mapping[str, RegistryEntry] = _table(
    RegistryEntry("DetectionTask", "faceforge.tasks.detection", "DetectionTask"),
    RegistryEntry("VolumeRegressionTask", "faceforge.tasks.reconstruction", "VolumeRegressionTask"),
    RegistryEntry("FaceGANTask", "faceforge.tasks.facegan", "FaceGANTask"),
)


def _lookup(table: Mapping[str, RegistryEntry], target: Any, kind: str) -> RegistryEntry:
    """The entry ``target`` names: its registry name, or exactly its class path.

    Raises:
        RegistryError: ``target`` is not a string, or names no entry of ``table``.
    """
    if isinstance(target, str):
        if target in table:
            return table[target]
        for entry in table.values():
            if target == entry.path:
                return entry
    shown = repr(target) if isinstance(target, str) and len(target) <= 200 else f"a {type(target).__name__}"
    raise RegistryError(f"{shown} is not a registered faceforge {kind}; registered {kind}s: "
                        f"{', '.join(sorted(table))}")


def model_class(target: str) -> type:
    """The network class a spec's ``_target_`` names (registry name or exact class path).

    Raises:
        RegistryError: anything else.
    """
    return _lookup(MODELS, target, "model").load()


def task_class(target: str) -> type:
    """The task class a checkpoint names (registry name, or the exact class path older checkpoints hold).

    Raises:
        RegistryError: anything else.
    """
    return _lookup(TASKS, target, "task").load()


def registry_name(cls: type) -> str | None:
    """The registry name of exactly this class (model or task), or None when it is not registered (a subclass is
    not its parent: a checkpoint of an unregistered subclass cannot be rebuilt)."""
    for entry in (*MODELS.values(), *TASKS.values()):
        if f"{cls.__module__}.{cls.__qualname__}" == entry.path:
            return entry.name
    return None


def _is_control_key(key: str) -> bool:
    """Hydra's control keys (``_target_``, ``_args_``, ``_partial_``, ``_recursive_``, ``_convert_``) and any
    other ``_name_`` key."""
    return len(key) > 2 and key.startswith("_") and key.endswith("_")


class _Budget:
    """Counts the values walked, so that a self-referencing or aliased YAML cannot walk for ever."""

    def __init__(self) -> None:
        self.left = MAX_SPEC_VALUES

    def take(self, where: str, depth: int) -> None:
        self.left -= 1
        if self.left < 0:
            raise SpecError(f"{where}: more than {MAX_SPEC_VALUES} values (or a self-referencing structure)")
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"{where}: nested deeper than {MAX_SPEC_DEPTH} levels")


def _primitive(value: Any, where: str, budget: _Budget, depth: int, allow_control_keys: bool = False) -> Any:
    """A plain copy of a primitive value (bool, int, float, str, None, lists, string-keyed dicts of them).

    Raises:
        SpecError: another type, a non-string key, or a control key (``_target_`` ...) in a dict.
    """
    budget.take(where, depth)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_primitive(v, f"{where}[{i}]", budget, depth + 1, allow_control_keys) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise SpecError(f"{where}: key {key!r} is not a string")
            if _is_control_key(key) and not allow_control_keys:
                raise SpecError(f"{where}: key {key!r} is not allowed here (no _target_ or other Hydra control key "
                                f"outside a registered network spec)")
            out[key] = _primitive(v, f"{where}.{key}", budget, depth + 1, allow_control_keys)
        return out
    raise SpecError(f"{where}: a {type(value).__name__} is not a primitive value (bool, int, float, str, None, "
                    f"or lists and dicts of them)")


def check_primitive(value: Any, where: str = "value") -> Any:
    """Check that ``value`` holds primitives only and no ``_target_`` or other Hydra control key; return a copy.

    Args:
        value: e.g. a task's hyperparameters read from a checkpoint.
        where: name used in error messages.

    Returns:
        A plain copy (dicts, lists, scalars).

    Raises:
        SpecError: a non-primitive value, a non-string key, a control key anywhere, or a structure that is too
            deep or too large.
    """
    return _primitive(value, where, _Budget(), 0)


def _build(spec: Any, where: str, budget: _Budget, depth: int, rebuild: bool) -> Any:
    budget.take(where, depth)
    if isinstance(spec, dict) and "_target_" in spec:
        entry = _lookup(MODELS, spec["_target_"], "model")
        kwargs: dict[str, Any] = {}
        for key, value in spec.items():
            if key == "_target_":
                continue
            if not isinstance(key, str):
                raise SpecError(f"{where}: key {key!r} is not a string")
            if _is_control_key(key):
                raise SpecError(f"{where}: Hydra control key {key!r} is not allowed in a network spec (only "
                                f"_target_ and keyword arguments)")
            kwargs[key] = _build(value, f"{where}.{key}", budget, depth + 1, rebuild)
        cls = entry.load()
        params = inspect.signature(cls.__init__).parameters
        accepts = {n for n, p in params.items() if n != "self"
                   and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
        unknown = sorted(set(kwargs) - accepts)
        if unknown:
            raise SpecError(f"{where}: {entry.name} takes no argument(s) {unknown}; it takes {sorted(accepts)}")
        if rebuild:
            kwargs.update({k: v for k, v in entry.rebuild_kwargs.items() if k in accepts})
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SpecError(f"{where}: {entry.name}({', '.join(sorted(kwargs))}) cannot be built: {exc}") from exc
    if isinstance(spec, dict):
        out = {}
        for key, value in spec.items():
            if not isinstance(key, str):
                raise SpecError(f"{where}: key {key!r} is not a string")
            if _is_control_key(key):
                raise SpecError(f"{where}: Hydra control key {key!r} is not allowed in a network spec")
            out[key] = _build(value, f"{where}.{key}", budget, depth + 1, rebuild)
        return out
    if isinstance(spec, (list, tuple)):
        return [_build(v, f"{where}[{i}]", budget, depth + 1, rebuild) for i, v in enumerate(spec)]
    if spec is None or isinstance(spec, (bool, int, float, str)):
        return spec
    raise SpecError(f"{where}: a {type(spec).__name__} is not a primitive value (bool, int, float, str, None, or "
                    f"lists and dicts of them)")


def build_model(spec: Mapping[str, Any], rebuild: bool = True) -> Any:
    """Build a registered network from a spec, without Hydra and without importing anything the spec names.

    Args:
        spec: a dict with ``_target_`` (a registry name or the exact class path, see the module docstring) and the
            constructor's keyword arguments: primitives, or nested dicts with ``_target_`` for registered
            sub-networks (``VRNGuided(landmark_net=..., vrn=...)``). Strings are passed as they are (no ``${...}``
            interpolation).
        rebuild: apply the entries' ``rebuild_kwargs`` (True when rebuilding from a checkpoint, whose weights are
            loaded afterwards).

    Returns:
        The network (an ``nn.Module``), freshly initialised.

    Raises:
        RegistryError: the top-level ``_target_`` (or a nested one) is not registered.
        SpecError: ``spec`` is not a dict with ``_target_``, holds a Hydra control key (``_args_``, ``_partial_``,
            ``_recursive_``, ``_convert_``, ...), a keyword the class does not take, a non-primitive value, or the
            class refuses the arguments (its ``TypeError`` / ``ValueError``).
    """
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise SpecError(f"a network spec must be a mapping with a _target_, got {type(spec).__name__}")
    return _build(spec, "net", _Budget(), 0, rebuild)
