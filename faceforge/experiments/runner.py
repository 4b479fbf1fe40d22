"""Run an experiment spec: train (``train.py``), evaluate (``evaluate.py``) and collect what the tables need.

Every run is a subprocess of the project's own entry points, with its output in a log file under ``<out>/logs/``
and its run folder under ``<out>/runs/`` (``paths.log_dir=<out>/runs``, ``run_name=<model id>`` for training,
``<entry id>__on__<dataset key>`` for evaluation):

* **Resumable.** A training run whose ``metrics.json`` names an existing checkpoint is finished and skipped; one
  that stopped after writing ``checkpoints/last.ckpt`` is continued with ``ckpt_path=last``; a folder left without
  any checkpoint is moved aside (``<run>.incomplete-N``) and the run starts again. An evaluation whose
  ``results.json`` was made from the same checkpoint (same SHA-256) is skipped.
* **Failures are kept.** A run that fails (non-zero exit, no checkpoint, no results) is recorded with its status
  and the path of its log relative to ``<out>``; the table shows it as failed and the command exits non-zero.
* **Evaluate only** (``evaluate_only=True``) trains nothing: it evaluates the checkpoints already in ``<out>`` and
  the imported weights.
* **Fixtures.** Every subprocess sees ``FACEFORGE_FIXTURES`` as an absolute folder (:func:`fixtures_dir`: the
  variable's value made absolute against the project root, or ``<project root>/../shared/fixtures`` when unset),
  so a spec's ``${oc.env:FACEFORGE_FIXTURES,../shared/fixtures}`` means the same folder whatever the working
  directory; the ``fixture`` profile refuses to start when that folder is absent.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

from faceforge.errors import FaceforgeError
from faceforge.experiments.spec import PROFILES, ExperimentSpec, Profile, check_override
from faceforge.utils.hashing import file_sha256

log = logging.getLogger(__name__)

__all__ = ["RunRecord", "EvalRecord", "ExperimentRun", "run_experiment", "file_sha256", "dataset_version",
           "ExperimentError", "fixtures_dir", "FIXTURES_ENV"]

#: The environment variable naming the real test fixtures folder (as in tests/conftest.py).
FIXTURES_ENV = "FACEFORGE_FIXTURES"


class ExperimentError(FaceforgeError, ValueError):
    """An experiment that cannot start (an unknown profile, a bad override on the command line)."""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def dataset_version(data_dir: str | Path | None) -> dict[str, Any]:
    """What identifies a prepared dataset folder's content: its builder settings record (``built_with.json``, as
    written by :mod:`faceforge.data.core.prepared`) and the SHA-256 of its index files (``*index*`` at the top
    level: ``face_index.parquet``, ``face_index.csv``, ``volume_index.csv``). Missing pieces are None / empty."""
    if not data_dir:
        return {"data_dir": None, "built_with": None, "index_sha256": {}}
    folder = Path(data_dir)
    built = folder / "built_with.json"
    index = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and "index" in p.name and not p.name.startswith("."):
                index[p.name] = file_sha256(p)
    return {"data_dir": str(folder), "built_with": _read_json(built) if built.is_file() else None,
            "built_with_sha256": file_sha256(built) if built.is_file() else None, "index_sha256": index}


@dataclass
class RunRecord:
    """One training run of a spec's model (or one imported weight file): status, checkpoint, provenance."""

    id: str
    kind: str                      # "reproduced" | "imported"
    label: str
    trained_on: str | None
    status: str = "pending"        # ok | skipped (finished before) | failed | missing
    overrides: list[str] = field(default_factory=list)
    run_dir: str | None = None     # relative to the experiment folder
    log: str | None = None         # relative to the experiment folder
    checkpoint: str | None = None  # absolute path
    checkpoint_sha256: str | None = None
    config: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    message: str = ""


@dataclass
class EvalRecord:
    """One evaluation (checkpoint or imported weights x test set): status and the metrics read back."""

    entry: str
    tested_on: str
    status: str = "pending"
    overrides: list[str] = field(default_factory=list)
    run_dir: str | None = None
    log: str | None = None
    metrics: dict[str, Any] | None = None
    weights_sha256: str | None = None
    config: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    message: str = ""


@dataclass
class ExperimentRun:
    """Everything one invocation did: the spec, profile, runs and evaluations (input of the tables)."""

    spec: ExperimentSpec
    profile: Profile
    out_dir: Path
    extra_overrides: list[str]
    runs: list[RunRecord]
    evaluations: list[EvalRecord]

    @property
    def failed(self) -> bool:
        """Whether any run or evaluation failed or lacks its checkpoint."""
        return any(r.status in ("failed", "missing") for r in self.runs) or \
            any(e.status in ("failed", "missing") for e in self.evaluations)


def fixtures_dir(project_root: str | Path) -> Path:
    """The real test fixtures folder: ``$FACEFORGE_FIXTURES`` (a relative value is taken against
    ``project_root``) or ``<project_root>/../shared/fixtures`` when unset; absolute, not checked for existence."""
    root = Path(project_root).resolve()
    value = os.environ.get(FIXTURES_ENV)
    path = Path(value) if value else root.parent / "shared" / "fixtures"
    return path if path.is_absolute() else (root / path).resolve()


@contextmanager
def _fixtures_env(path: Path) -> Iterator[None]:
    """Set ``FACEFORGE_FIXTURES=path`` for the subprocesses started inside; restore the previous value after."""
    previous = os.environ.get(FIXTURES_ENV)
    os.environ[FIXTURES_ENV] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FIXTURES_ENV, None)
        else:
            os.environ[FIXTURES_ENV] = previous


def _check_extra(overrides: Sequence[str]) -> list[str]:
    """Command-line overrides: any Hydra override except the keys the runner sets (paths.* is allowed here)."""
    out = []
    for item in overrides:
        problem = check_override(item)
        if problem and "paths.*" not in problem and "Hydra itself" not in problem:
            raise ExperimentError(f"--override {item}: {problem}")
        out.append(item)
    return out


def _check_composes(overrides: Sequence[str], extra: Sequence[str]) -> None:
    """Compose ``conf/train.yaml`` with one training run's overrides (nothing runs).

    Raises:
        ExperimentError: Hydra refuses them (an unknown key or config, a malformed value), naming ``extra``.
    """
    from hydra.errors import HydraException

    from faceforge.data.core.prepared import compose_config

    try:
        compose_config(list(overrides))
    except HydraException as exc:
        raise ExperimentError(f"--override {' '.join(extra)}: {' '.join(str(exc).split())}") from None


def _run_command(cmd: list[str], log_path: Path, cwd: Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        return subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode


def _data_dir_of(config: dict[str, Any] | None) -> str | None:
    data = (config or {}).get("data") or {}
    return data.get("faces_dir") or data.get("volumes_dir") or None


def _rel(path: Path, out_dir: Path) -> str:
    try:
        return str(path.relative_to(out_dir))
    except ValueError:
        return str(path)


def run_experiment(spec: ExperimentSpec, out_dir: str | Path, profile: str = "real", evaluate_only: bool = False,
                   extra_overrides: Sequence[str] = (), weights_dir: str | Path | None = None,
                   only: Sequence[str] | None = None, project_root: str | Path | None = None,
                   python: str = sys.executable,
                   runner: Callable[[list[str], Path, Path], int] = _run_command) -> ExperimentRun:
    """Train and evaluate every entry of ``spec`` under ``out_dir`` (resuming what is finished); return the record.

    Args:
        spec: a validated spec (:func:`faceforge.experiments.spec.load_spec`).
        out_dir: the experiment folder (runs, logs, tables).
        profile: ``real`` (the spec's datasets), ``embedded`` (its synthetic stand-ins) or ``fixture`` (its
            stand-ins on the real test fixtures, for specs with a ``fixture:`` block).
        evaluate_only: train nothing; evaluate existing checkpoints in ``out_dir`` and imported weights.
        extra_overrides: Hydra overrides added last to every command (e.g. ``trainer=gpu``, ``paths.data_dir=...``).
        weights_dir: folder of imported weight files (default: the spec's ``weights_dir``).
        only: entry ids to run (default: all).
        project_root: the folder holding train.py / evaluate.py (default: the package's project).
        python: the interpreter for the subprocesses.
        runner: ``runner(cmd, log_path, cwd) -> exit code`` (tests may replace it).

    Raises:
        ExperimentError: unknown profile, a profile the spec does not offer (``fixture`` without a ``fixture:``
            block), the ``fixture`` profile without the fixtures folder, an unknown entry id, or a refused
            command-line override.
    """
    if profile not in spec.profiles:
        if profile in PROFILES:
            raise ExperimentError(f"{spec.path}: this spec offers no {profile!r} profile (it has no {profile}: "
                                  f"block; its profiles: {', '.join(spec.profiles)})")
        raise ExperimentError(f"unknown profile {profile!r} (profiles: {', '.join(spec.profiles)})")
    prof = spec.profiles[profile]
    root = Path(project_root) if project_root else Path(__file__).resolve().parents[2]
    fixtures = fixtures_dir(root)
    if profile == "fixture" and not fixtures.is_dir():
        raise ExperimentError(f"profile 'fixture' needs the real test fixtures: {fixtures} is not a folder "
                              f"(set {FIXTURES_ENV})")
    with _fixtures_env(fixtures):
        return _run_all(spec, prof, out_dir, evaluate_only, extra_overrides, weights_dir, only, root, python,
                        runner)


def _run_all(spec: ExperimentSpec, prof: Profile, out_dir: str | Path, evaluate_only: bool,
             extra_overrides: Sequence[str], weights_dir: str | Path | None, only: Sequence[str] | None,
             root: Path, python: str, runner: Callable[[list[str], Path, Path], int]) -> ExperimentRun:
    """:func:`run_experiment` after its profile checks, with ``FACEFORGE_FIXTURES`` set."""
    out_dir = Path(out_dir).resolve()
    runs_dir = out_dir / "runs"
    extra = _check_extra(extra_overrides)
    ids = [m.id for m in spec.models] + [i.id for i in spec.imported]
    if only:
        unknown = sorted(set(only) - set(ids))
        if unknown:
            raise ExperimentError(f"{spec.path}: --only {unknown[0]}: not an entry (entries: {', '.join(ids)})")
    selected = set(only) if only else set(ids)
    common = [f"seed={spec.seed}", f"paths.log_dir={runs_dir}"]
    records: list[RunRecord] = []
    evals: list[EvalRecord] = []

    first = next((m for m in spec.models if m.id in selected), None)
    if extra and first is not None:  # the command line's overrides: a mistake there stops before any run
        _check_composes([*prof.datasets[first.train_on].overrides, *prof.model_args(first), *prof.train_overrides,
                         *extra], extra)
    for model in (m for m in spec.models if m.id in selected):
        rec = RunRecord(model.id, "reproduced", model.label, model.train_on)
        run_dir = runs_dir / "train" / "runs" / model.id
        rec.run_dir = _rel(run_dir, out_dir)
        rec.overrides = [*prof.datasets[model.train_on].overrides, *prof.model_args(model), *prof.train_overrides,
                         *extra, *common, f"run_name={model.id}", "test=false"]
        rec.log = _rel(out_dir / "logs" / f"train_{model.id}.log", out_dir)
        _train(rec, run_dir, out_dir, root, python, runner, evaluate_only)
        records.append(rec)

    wdir = spec.resolve_weights_dir(weights_dir, root)
    for imp in (i for i in spec.imported if i.id in selected):
        rec = RunRecord(imp.id, "imported", imp.label, None, message=imp.note)
        path = (wdir / imp.weights) if wdir is not None else None
        if path is None or not path.is_file():
            rec.status = "missing"
            rec.message = f"weights file {path} not found (set ${spec.weights_dir.get('env')} or --weights-dir)"
        else:
            rec.status = "ok"
            rec.checkpoint = str(path.resolve())
            rec.checkpoint_sha256 = file_sha256(path)
        records.append(rec)

    tests = {m.id: m.test_on for m in spec.models} | {i.id: i.test_on for i in spec.imported}
    for rec in records:
        for ds in tests[rec.id]:
            ev = EvalRecord(rec.id, ds)
            name = f"{rec.id}__on__{ds}"
            ev.log = _rel(out_dir / "logs" / f"eval_{name}.log", out_dir)
            run_dir = runs_dir / "eval" / "runs" / name
            ev.run_dir = _rel(run_dir, out_dir)
            if rec.checkpoint is None:
                ev.status = "missing"
                ev.message = f"no checkpoint: {rec.id} is {rec.status}"
                evals.append(ev)
                continue
            ev.overrides = [*prof.datasets[ds].overrides, *prof.eval_overrides, *extra, *common,
                            f"run_name={name}", f"ckpt_path={rec.checkpoint}"]
            _evaluate(ev, rec, run_dir, out_dir, root, python, runner)
            evals.append(ev)
    return ExperimentRun(spec, prof, out_dir, extra, records, evals)


def _train(rec: RunRecord, run_dir: Path, out_dir: Path, root: Path, python: str,
           runner: Callable[[list[str], Path, Path], int], evaluate_only: bool) -> None:
    """Train one model (or find it finished); fill ``rec``."""
    def finished() -> str | None:
        metrics = _read_json(run_dir / "metrics.json")
        if metrics is None:
            return None
        best = metrics.get("best_checkpoint") or str(run_dir / "checkpoints" / "last.ckpt")
        return best if Path(best).is_file() else None

    ckpt = finished()
    if ckpt is not None:
        rec.status = "skipped"
    elif evaluate_only:
        rec.status = "missing"
        rec.message = f"--evaluate-only: no finished training run in {rec.run_dir}"
    else:
        overrides = list(rec.overrides)
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            overrides.append("ckpt_path=last")
        elif run_dir.exists():
            n = 1
            while run_dir.with_name(f"{run_dir.name}.incomplete-{n}").exists():
                n += 1
            shutil.move(str(run_dir), str(run_dir.with_name(f"{run_dir.name}.incomplete-{n}")))
        log.info("training %s: train.py %s", rec.id, " ".join(overrides))
        code = runner([python, str(root / "train.py"), *overrides], out_dir / str(rec.log), root)
        ckpt = finished()
        if code != 0 or ckpt is None:
            rec.status = "failed"
            rec.message = f"train.py exited with {code}" + ("" if ckpt else " and left no finished checkpoint")
            ckpt = None
        else:
            rec.status = "ok"
    if ckpt is not None:
        rec.checkpoint = str(Path(ckpt).resolve())
        rec.checkpoint_sha256 = file_sha256(ckpt)
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        try:
            rec.config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            rec.config = None
        rec.dataset = dataset_version(_data_dir_of(rec.config))


def _evaluate(ev: EvalRecord, rec: RunRecord, run_dir: Path, out_dir: Path, root: Path, python: str,
              runner: Callable[[list[str], Path, Path], int]) -> None:
    """Evaluate one checkpoint on one test set (or reuse a results file made from the same checkpoint)."""
    results_path = run_dir / "results.json"
    previous = _read_json(results_path)
    if previous is not None and (previous.get("checkpoint") or {}).get("sha256") == rec.checkpoint_sha256:
        ev.status = "skipped"
        results = previous
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # an evaluation of another checkpoint, or one that did not finish
        log.info("evaluating %s on %s: evaluate.py %s", rec.id, ev.tested_on, " ".join(ev.overrides))
        code = runner([python, str(root / "evaluate.py"), *ev.overrides], out_dir / str(ev.log), root)
        results = _read_json(results_path)
        if code != 0 or results is None:
            ev.status = "failed"
            ev.message = f"evaluate.py exited with {code}" + ("" if results else " and wrote no results.json")
            return
        ev.status = "ok"
    ev.metrics = results.get("metrics")
    ev.weights_sha256 = (results.get("checkpoint") or {}).get("sha256")
    ev.config = results.get("config")
    ev.dataset = dataset_version((results.get("data") or {}).get("data_dir"))
    ev.dataset["name"] = (results.get("data") or {}).get("name")

