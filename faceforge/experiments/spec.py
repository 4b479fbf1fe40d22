"""Experiment specs: one YAML file per published comparison (``experiments/*.yaml``), read as data.

A spec is loaded with ``yaml.safe_load`` and checked against the small schema below; it never names code to import:
every run is a ``train.py`` / ``evaluate.py`` command line built from Hydra overrides that pick configs of the
project's own ``conf/`` folder, and :func:`check_override` refuses overrides that name a ``_target_``, touch
``hydra``, or interpolate anything but an environment variable (``${oc.env:FFPP_ROOT}``) or another config
value (``${paths.data_dir}``): no resolver runs code. Imported weights are plain
file names inside one weights folder (an environment variable or a folder given on the command line), never paths.

Schema (``?`` = optional)::

    name: str                          # the experiment's name (tables are named after it)
    title: str
    description?: str
    seed: int                          # every train.py / evaluate.py run gets seed=<seed>
    metrics:                           # the table's columns per test set: a key into results.json["metrics"]
      - {key: frame.auc, label: frame AUC}      # (dotted; "frame.auc" = metrics["frame"]["auc"])
    datasets:                          # real data: dataset key -> label and Hydra overrides
      ffpp: {label: FF++ c23, overrides: [data=ffpp, "data.root=${oc.env:FFPP_ROOT}"]}
    train_overrides?: [str]            # added to every training run (real data)
    eval_overrides?: [str]             # added to every evaluation (real data)
    models?:                           # reproduced training: one train.py run each
      meso4: {label: Meso-4, overrides: [model=meso4], train_on: ffpp, test_on: [ffpp, celebdf]}
    imported?:                         # imported weights: evaluated only, marked apart
      meso4_df: {label: ..., weights: Meso4_DF.h5, test_on: [ffpp], note?: str}
    weights_dir?: {env: FACEFORGE_FIXTURES, default: ../shared/fixtures, subdir: mesonet/weights}
    baseline?: {label: str, from: <model id>, metrics: {<metric key>: <results key>}}
    references?:                       # published numbers shown beside ours
      - {source: str, metric: <metric key>, values: {<model or imported id>: {<dataset key>: float or null}}}
    embedded:                          # the same experiment on the embedded synthetic data (CPU, minutes)
      description?: str                # what the stand-ins are (shown in the table's profile note)
      datasets: {ffpp: [data=synthetic, data.builder.seed=0], ...}   # every dataset key mapped
      models?: {vrn: [model=vrn]}      # overrides replacing a model's own in this profile
      train_overrides?: [str]
      eval_overrides?: [str]
    fixture?:                          # optional: the same schema as embedded, on the project's REAL test
      description?: str                # fixtures (a handful of real samples; smoke-size, CPU, minutes)
      datasets: {w300lp: [data=w300lp, "data.root=${oc.env:FACEFORGE_FIXTURES,../shared/fixtures}/face3d_300wlp"]}
      models?: {...}
      train_overrides?: [str]
      eval_overrides?: [str]

Profiles (:data:`PROFILES`): ``real`` (``datasets``, ``train_overrides``, ``eval_overrides``), ``embedded`` (every
spec has one) and ``fixture`` (only specs with a ``fixture:`` block offer it). The fixture folder is named by the
environment variable ``FACEFORGE_FIXTURES`` (as in the tests); the experiment runner sets it to the absolute
``<project root>/../shared/fixtures`` when it is unset, so a relative default in a spec resolves the same from any
working directory, and refuses to start a ``fixture`` run when that folder is absent.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from faceforge.errors import FaceforgeError

__all__ = ["SpecError", "ExperimentSpec", "Metric", "Dataset", "ModelRun", "ImportedWeights", "Baseline",
           "Reference", "Profile", "load_spec", "parse_spec", "check_override", "PROFILES"]

#: The profiles a spec may define: ``real`` (its ``datasets``), ``embedded`` (its ``embedded`` block, required)
#: and ``fixture`` (its optional ``fixture`` block: the project's real test fixtures).
PROFILES = ("real", "embedded", "fixture")

#: The profile blocks of a spec: required (``embedded``) or optional (``fixture``).
_PROFILE_BLOCKS = {"embedded": True, "fixture": False}

#: Settings the experiment runner sets itself on every command line; a spec may not set them.
RUNNER_KEYS = ("seed", "run_name", "ckpt_path", "results_path", "task_name", "test", "train")

_OVERRIDE = re.compile(r"^(?P<key>(?:\+\+|\+|~)?[A-Za-z_][A-Za-z0-9_.@/\-]*)=(?P<value>.*)$", re.S)
_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_ENV_INTERPOLATION = re.compile(r"^oc\.env:[A-Za-z_][A-Za-z0-9_]*(,[^${}]*)?$")
_NODE_INTERPOLATION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class SpecError(FaceforgeError, ValueError):
    """An experiment spec that cannot be read or breaks the schema; the message names the file and the key."""


@dataclass(frozen=True)
class Metric:
    """One metric column: ``key`` into ``results.json["metrics"]`` (dotted) and its column label."""

    key: str
    label: str


@dataclass(frozen=True)
class Dataset:
    """A dataset key, its label and the Hydra overrides that select it (for the active profile)."""

    key: str
    label: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class ModelRun:
    """A reproduced training run: trained on ``train_on``, evaluated on each of ``test_on``."""

    id: str
    label: str
    overrides: tuple[str, ...]
    train_on: str
    test_on: tuple[str, ...]


@dataclass(frozen=True)
class ImportedWeights:
    """Imported weights (a file name in the weights folder), evaluated on each of ``test_on``, never trained."""

    id: str
    label: str
    weights: str
    test_on: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class Baseline:
    """The trivial baseline row: metric values read from the evaluations of model ``from_run`` under other keys."""

    label: str
    from_run: str
    metrics: dict[str, str]


@dataclass(frozen=True)
class Reference:
    """Published numbers: ``values[entry id][dataset key]`` of metric ``metric``, from ``source``."""

    source: str
    metric: str
    values: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class Profile:
    """The overrides of one profile: datasets by key, plus overrides common to every training / evaluation."""

    name: str
    datasets: dict[str, Dataset]
    train_overrides: tuple[str, ...]
    eval_overrides: tuple[str, ...]
    #: per model id, overrides that replace the model's own in this profile (a small CPU network instead of a
    #: paper recipe)
    model_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: what this profile's datasets are (the block's ``description``; empty for ``real``)
    description: str = ""

    def model_args(self, model: ModelRun) -> tuple[str, ...]:
        """The overrides that select ``model`` in this profile."""
        return self.model_overrides.get(model.id, model.overrides)


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment spec (see the module docstring for the schema)."""

    path: Path
    sha256: str
    name: str
    title: str
    description: str
    seed: int
    metrics: tuple[Metric, ...]
    models: tuple[ModelRun, ...]
    imported: tuple[ImportedWeights, ...]
    baseline: Baseline | None
    references: tuple[Reference, ...]
    profiles: dict[str, Profile]
    weights_dir: dict[str, str] = field(default_factory=dict)
    embedded_description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def dataset_label(self, key: str) -> str:
        """The label of dataset ``key``: the real dataset's, in every profile (a table names what a stand-in
        stands for)."""
        return self.profiles["real"].datasets[key].label

    def resolve_weights_dir(self, override: str | Path | None = None, root: str | Path = ".") -> Path | None:
        """The folder imported weight files are read from: ``override`` if given, else ``$<env>/<subdir>`` or
        ``<root>/<default>/<subdir>``. None when the spec imports nothing."""
        if override is not None:
            return Path(override)
        if not self.weights_dir:
            return None
        base = os.environ.get(self.weights_dir.get("env", "")) or str(Path(root) / self.weights_dir["default"])
        return Path(base) / self.weights_dir.get("subdir", "")


class _Checker:
    """Schema checks that raise one SpecError naming the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.path}: {key}: {problem}")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        return value

    def string(self, value: Any, key: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"{value!r} is not allowed here (expected {pattern.pattern})")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {type(value).__name__}")
        return tuple(self.string(v, f"{key}[{i}]") for i, v in enumerate(value))

    def overrides(self, value: Any, key: str) -> tuple[str, ...]:
        out = self.strings(value, key)
        for i, item in enumerate(out):
            problem = check_override(item)
            if problem:
                raise self.fail(f"{key}[{i}]", problem)
        return out

    def known(self, block: dict[str, Any], key: str, allowed: set[str]) -> None:
        unknown = sorted(set(block) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                            f"unknown key (allowed: {', '.join(sorted(allowed))})")


#: The project's Hydra config folder: a group choice in a spec must name one of its files.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


def _group_choice_problem(item: str, bare: str, value: str) -> str | None:
    """Why ``bare=value`` is not a choice of one of the project's own configs (``conf/<group>/<value>.yaml``),
    or None. ``bare`` is a config group when ``conf/<bare>/`` is a folder (``data``, ``model``, ``debug``,
    ``hydra/launcher`` ...); a choice is then a plain config name (no ``/``, ``..``, absolute path or list), so a
    spec cannot make Hydra load a YAML file from elsewhere."""
    parts = bare.split("/")
    if "." in bare or not all(_CONFIG_NAME.match(part) for part in parts):
        return None  # a value (data.root=...), not a group choice
    group = CONF_DIR.joinpath(*parts)
    if not group.is_dir():
        return None
    if item.startswith("~") and not value:
        return None  # ~group: drop the group's config
    if not _CONFIG_NAME.match(value):
        return (f"{item!r}: {bare} is a config group; its value must be the name of a config in conf/{bare}/ "
                f"(no path, no list)")
    if not (group / f"{value}.yaml").is_file():
        known = sorted(f.stem for f in group.glob("*.yaml"))
        return f"{item!r}: conf/{bare}/ has no config {value!r} (known: {', '.join(known)})"
    return None


def check_override(item: str, runner_keys: tuple[str, ...] = RUNNER_KEYS) -> str | None:
    """Why a Hydra override may not come from a spec file, or None when it may.

    Allowed: ``key=value``, ``+key=value``, ``~key`` forms over the project's config groups and settings (a group
    choice must name a config file of the group's folder under ``conf/``: no path, which would make Hydra load a
    YAML from elsewhere, and no ``@package``), with
    interpolations limited to environment variables (``${oc.env:NAME}`` or ``${oc.env:NAME,default}``) and other
    config values (``${paths.data_dir}``): no other resolver. Refused:
    anything naming ``_target_`` / ``_partial_`` / ``_args_`` (code to instantiate), ``hydra`` settings, ``paths.*``
    (where runs and data go is the command's choice) and the keys the runner sets itself (``seed``, ``run_name``,
    ``ckpt_path`` ...).
    """
    if item.startswith("~") and "=" not in item:
        key, value = item, ""
    else:
        match = _OVERRIDE.match(item)
        if not match:
            return f"{item!r} is not a Hydra override of the form key=value"
        key, value = match.group("key"), match.group("value")
    bare = key.lstrip("+~")
    if "@" in bare:
        return f"{item!r} moves a config to another package (@): a spec only selects configs"
    group_problem = _group_choice_problem(item, bare, value)
    if group_problem:
        return group_problem
    if any(word in item for word in ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")):
        return f"{item!r} names code to instantiate (_target_/_partial_/...): a spec only selects configs"
    if bare.split(".")[0].split("/")[0] == "hydra":
        return f"{item!r} changes Hydra itself: not allowed in a spec"
    if bare.split(".")[0] == "paths" or bare.split("/")[0] == "paths":
        return f"{item!r}: paths.* is the command's choice (--override on the command line), not the spec's"
    if bare in runner_keys:
        return f"{item!r}: {bare} is set by the experiment runner"
    for inner in _INTERPOLATION.findall(value):
        inner = inner.strip()
        if not (_ENV_INTERPOLATION.match(inner) or _NODE_INTERPOLATION.match(inner)):
            return (f"{item!r}: only environment variables ${{oc.env:NAME}} and config values ${{a.b}} may be "
                    f"interpolated, not ${{{inner}}}")
    return None


def _dataset_block(check: _Checker, value: Any, key: str, label_default: str) -> Dataset:
    ds_key = key.rsplit(".", 1)[-1]
    if isinstance(value, list):
        return Dataset(ds_key, label_default, check.overrides(value, key))
    block = check.mapping(value, key)
    check.known(block, key, {"label", "overrides"})
    label = check.string(block.get("label", label_default), f"{key}.label")
    if "overrides" not in block:
        raise check.fail(f"{key}.overrides", "missing (the Hydra overrides that select this dataset)")
    return Dataset(ds_key, label, check.overrides(block["overrides"], f"{key}.overrides"))


def _profile_block(check: _Checker, value: Any, name: str, datasets: dict[str, Dataset],
                   model_ids: set[str]) -> Profile:
    """The ``embedded`` / ``fixture`` block ``value`` of a spec as a :class:`Profile` named ``name``: every dataset
    key mapped to its stand-in, model overrides only for ids under ``models``."""
    block = check.mapping(value, name)
    check.known(block, name, {"datasets", "models", "train_overrides", "eval_overrides", "description"})
    model_overrides = {}
    for key, item in check.mapping(block.get("models") or {}, f"{name}.models").items():
        if key not in model_ids:
            raise check.fail(f"{name}.models.{key}", "not an id under models")
        model_overrides[key] = check.overrides(item, f"{name}.models.{key}")
    stand_ins = check.mapping(block.get("datasets"), f"{name}.datasets")
    for key in datasets:
        if key not in stand_ins:
            raise check.fail(f"{name}.datasets.{key}", f"missing: every dataset needs its {name} stand-in")
    for key in stand_ins:
        if key not in datasets:
            raise check.fail(f"{name}.datasets.{key}", "not a key of datasets")
    description = block.get("description", "")
    if not isinstance(description, str):
        raise check.fail(f"{name}.description", f"must be a string, got {type(description).__name__}")
    return Profile(name, {k: _dataset_block(check, v, f"{name}.datasets.{k}", datasets[k].label)
                          for k, v in stand_ins.items()},
                   check.overrides(block.get("train_overrides"), f"{name}.train_overrides"),
                   check.overrides(block.get("eval_overrides"), f"{name}.eval_overrides"), model_overrides,
                   description.strip())


def parse_spec(data: Any, path: str | Path) -> ExperimentSpec:
    """Validate a loaded spec (``yaml.safe_load`` output) and return it; ``path`` names it in errors.

    Raises:
        SpecError: the first problem found, as ``"<path>: <key>: <problem>"``.
    """
    path = Path(path)
    check = _Checker(path)
    top = check.mapping(data, "(top level)")
    check.known(top, "", {"name", "title", "description", "seed", "metrics", "datasets", "train_overrides",
                          "eval_overrides", "models", "imported", "weights_dir", "baseline", "references",
                          *_PROFILE_BLOCKS})
    for required in ("name", "seed", "metrics", "datasets", "embedded"):
        if required not in top:
            raise check.fail(required, "missing (required)")
    name = check.string(top["name"], "name", _ID)
    seed = top["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise check.fail("seed", f"must be an integer, got {seed!r}")

    if not isinstance(top["metrics"], list) or not top["metrics"]:
        raise check.fail("metrics", "must be a non-empty list")
    metrics = []
    for i, m in enumerate(top["metrics"]):
        if isinstance(m, str):
            metrics.append(Metric(check.string(m, f"metrics[{i}]"), m))
            continue
        block = check.mapping(m, f"metrics[{i}]")
        check.known(block, f"metrics[{i}]", {"key", "label"})
        key = check.string(block.get("key"), f"metrics[{i}].key")
        metrics.append(Metric(key, check.string(block.get("label", key), f"metrics[{i}].label")))
    metric_keys = {m.key for m in metrics}

    real = check.mapping(top["datasets"], "datasets")
    if not real:
        raise check.fail("datasets", "must name at least one dataset")
    datasets = {}
    for key, value in real.items():
        check.string(key, f"datasets.{key}", _ID)
        datasets[key] = _dataset_block(check, value, f"datasets.{key}", key)

    def dataset_refs(value: Any, key: str) -> tuple[str, ...]:
        refs = check.strings(value, key)
        if not refs:
            raise check.fail(key, "must name at least one dataset")
        for i, ref in enumerate(refs):
            if ref not in datasets:
                raise check.fail(f"{key}[{i}]", f"unknown dataset {ref!r} (datasets: {', '.join(datasets)})")
        return refs

    ids: set[str] = set()
    models = []
    for key, value in check.mapping(top.get("models") or {}, "models").items():
        where = f"models.{key}"
        check.string(key, where, _ID)
        block = check.mapping(value, where)
        check.known(block, where, {"label", "overrides", "train_on", "test_on"})
        train_on = check.string(block.get("train_on"), f"{where}.train_on")
        if train_on not in datasets:
            raise check.fail(f"{where}.train_on", f"unknown dataset {train_on!r} (datasets: {', '.join(datasets)})")
        models.append(ModelRun(key, check.string(block.get("label", key), f"{where}.label"),
                               check.overrides(block.get("overrides"), f"{where}.overrides"), train_on,
                               dataset_refs(block.get("test_on"), f"{where}.test_on")))
        ids.add(key)
    imported = []
    for key, value in check.mapping(top.get("imported") or {}, "imported").items():
        where = f"imported.{key}"
        check.string(key, where, _ID)
        if key in ids:
            raise check.fail(where, "the same id is used under models")
        block = check.mapping(value, where)
        check.known(block, where, {"label", "weights", "test_on", "note"})
        weights = check.string(block.get("weights"), f"{where}.weights", _FILE_NAME)
        imported.append(ImportedWeights(key, check.string(block.get("label", key), f"{where}.label"), weights,
                                        dataset_refs(block.get("test_on"), f"{where}.test_on"),
                                        str(block.get("note", ""))))
        ids.add(key)
    if not models and not imported:
        raise check.fail("models", "a spec needs at least one entry under models or imported")

    weights_dir: dict[str, str] = {}
    if imported:
        if "weights_dir" not in top:
            raise check.fail("weights_dir", "missing: imported weights need {env: NAME, default: folder}")
        block = check.mapping(top["weights_dir"], "weights_dir")
        check.known(block, "weights_dir", {"env", "default", "subdir"})
        weights_dir = {"env": check.string(block.get("env"), "weights_dir.env", re.compile(r"^[A-Za-z_]\w*$")),
                       "default": check.string(block.get("default"), "weights_dir.default"),
                       "subdir": str(block.get("subdir", ""))}
        if ".." in Path(weights_dir["subdir"]).parts or Path(weights_dir["subdir"]).is_absolute():
            raise check.fail("weights_dir.subdir", "must be a relative folder without '..'")

    baseline = None
    if top.get("baseline") is not None:
        block = check.mapping(top["baseline"], "baseline")
        check.known(block, "baseline", {"label", "from", "metrics"})
        source = check.string(block.get("from"), "baseline.from")
        if source not in {m.id for m in models}:
            raise check.fail("baseline.from", f"unknown model {source!r}")
        mapping = check.mapping(block.get("metrics"), "baseline.metrics")
        for k, v in mapping.items():
            if k not in metric_keys:
                raise check.fail(f"baseline.metrics.{k}", f"not one of metrics ({', '.join(sorted(metric_keys))})")
            check.string(v, f"baseline.metrics.{k}")
        baseline = Baseline(check.string(block.get("label"), "baseline.label"), source, dict(mapping))

    references = []
    refs = top.get("references") or []
    if not isinstance(refs, list):
        raise check.fail("references", "must be a list")
    for i, ref in enumerate(refs):
        where = f"references[{i}]"
        block = check.mapping(ref, where)
        check.known(block, where, {"source", "metric", "values"})
        metric = check.string(block.get("metric"), f"{where}.metric")
        if metric not in metric_keys:
            raise check.fail(f"{where}.metric", f"{metric!r} is not one of metrics ({', '.join(sorted(metric_keys))})")
        values: dict[str, dict[str, float | None]] = {}
        for entry, per_ds in check.mapping(block.get("values"), f"{where}.values").items():
            if entry not in ids:
                raise check.fail(f"{where}.values.{entry}", "not an id under models or imported")
            values[entry] = {}
            for ds, v in check.mapping(per_ds, f"{where}.values.{entry}").items():
                if ds not in datasets:
                    raise check.fail(f"{where}.values.{entry}.{ds}", "unknown dataset")
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise check.fail(f"{where}.values.{entry}.{ds}", f"must be a number or null, got {v!r}")
                values[entry][ds] = None if v is None else float(v)
        references.append(Reference(check.string(block.get("source"), f"{where}.source"), metric, values))

    profiles = {"real": Profile("real", datasets, check.overrides(top.get("train_overrides"), "train_overrides"),
                                check.overrides(top.get("eval_overrides"), "eval_overrides"))}
    for block_name, required in _PROFILE_BLOCKS.items():
        if required or top.get(block_name) is not None:
            profiles[block_name] = _profile_block(check, top[block_name], block_name, datasets,
                                                  {m.id for m in models})

    raw_bytes = yaml.safe_dump(data, sort_keys=True).encode()
    return ExperimentSpec(path=path, sha256=hashlib.sha256(raw_bytes).hexdigest(), name=name,
                          title=str(top.get("title", name)), description=str(top.get("description", "")),
                          seed=int(seed), metrics=tuple(metrics), models=tuple(models), imported=tuple(imported),
                          baseline=baseline, references=tuple(references), profiles=profiles,
                          weights_dir=weights_dir, embedded_description=profiles["embedded"].description, raw=data)


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment spec file.

    Raises:
        SpecError: the file is missing or unreadable, not YAML, or breaks the schema (the message names the file
            and the key).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the experiment spec ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: (file): not valid YAML ({exc})") from None
    spec = parse_spec(data, path)
    return replace(spec, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
