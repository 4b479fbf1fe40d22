"""Experiment specs (experiments/*.yaml) and the experiment command (experiment.py, faceforge.experiments)."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from faceforge.errors import FaceforgeError
from faceforge.experiments.cli import main as experiment_main
from faceforge.experiments.runner import run_experiment
from faceforge.experiments.spec import SpecError, check_override, load_spec
from faceforge.experiments.tables import build_table, write_provenance, write_tables

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "experiments").glob("*.yaml"))

MINIMAL = {
    "name": "tiny",
    "seed": 3,
    "metrics": [{"key": "frame.auc", "label": "AUC"}],
    "datasets": {"a": {"label": "A", "overrides": ["data=ffpp", "data.root=${oc.env:A_ROOT}"]},
                 "b": {"label": "B", "overrides": ["data=dfdc", "data.root=${oc.env:B_ROOT}"]}},
    "models": {"m": {"label": "M", "overrides": ["model=meso4"], "train_on": "a", "test_on": ["a", "b"]}},
    "baseline": {"label": "const", "from": "m", "metrics": {"frame.auc": "baseline.frame.auc"}},
    "references": [{"source": "Paper X", "metric": "frame.auc", "values": {"m": {"a": 0.6, "b": None}}}],
    "embedded": {"datasets": {"a": ["data=synthetic", "data.builder.seed=0"],
                              "b": ["data=synthetic", "data.builder.seed=1"]}},
}


def _write(tmp_path: Path, data: object, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_specs_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    assert {"real", "embedded"} <= set(spec.profiles) <= {"real", "embedded", "fixture"}
    assert spec.models or spec.imported
    # every dataset has its embedded stand-in, and no override of a spec names code
    assert set(spec.profiles["embedded"].datasets) == set(spec.profiles["real"].datasets)
    text = path.read_text(encoding="utf-8")
    assert "_target_" not in text


def test_published_reference_numbers_are_in_the_specs() -> None:
    meso = load_spec(ROOT / "experiments" / "meso_ffpp_c23.yaml")
    (ref,) = meso.references
    assert "DeepfakeBench" in ref.source
    assert ref.values["meso4"] == {"ffpp": 0.6077, "celebdf": 0.6091, "dfdc": 0.5560}
    assert ref.values["mesoinception4"] == {"ffpp": 0.7583, "celebdf": 0.6966, "dfdc": 0.6226}
    seq = load_spec(ROOT / "experiments" / "resnext_lstm_seq_len.yaml")
    assert [m.id for m in seq.models] == [f"frames_{n}" for n in (10, 20, 40, 60, 80, 100)]
    assert seq.references[0].values["frames_10"]["ffpp"] == 0.842
    assert seq.references[0].values["frames_100"]["ffpp"] == 0.936
    weights = load_spec(ROOT / "experiments" / "mesonet_authors_weights.yaml")
    assert not weights.models and {i.weights for i in weights.imported} >= {"Meso4_DF.h5", "MesoInception_DF.h5"}


def _mutate(path: str, value: object) -> dict:
    """A copy of MINIMAL with ``path`` (dotted, list indexes as ints) set to ``value`` (``...`` deletes it)."""
    data = copy.deepcopy(MINIMAL)
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = data
    for p in parts[:-1]:
        node = node[p]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value", "key", "words"), [
    ("name", ..., "name", "missing"),
    ("seed", "42", "seed", "integer"),
    ("colour", "red", "colour", "unknown key"),
    ("models.m.overrides", ["model=meso4", "+model.net._target_=os.system"], "models.m.overrides[1]", "code"),
    ("models.m.overrides", ["model.net.x=${oc.create:{a: 1}}"], "models.m.overrides[0]", "interpolated"),
    ("models.m.overrides", ["hydra.run.dir=/tmp/x"], "models.m.overrides[0]", "Hydra"),
    ("models.m.overrides", ["paths.log_dir=/elsewhere"], "models.m.overrides[0]", "paths"),
    ("models.m.overrides", ["seed=7"], "models.m.overrides[0]", "runner"),
    ("models.m.overrides", ["not an override"], "models.m.overrides[0]", "key=value"),
    # a group choice names one of conf/<group>/'s files: a path would make Hydra load (and instantiate) any YAML
    ("models.m.overrides", ["debug=../../../../tmp/evil"], "models.m.overrides[0]", "config group"),
    ("models.m.overrides", ["model=/tmp/evil"], "models.m.overrides[0]", "config group"),
    ("models.m.overrides", ["model=nosuch"], "models.m.overrides[0]", "has no config"),
    ("models.m.overrides", ["data@model=ffpp"], "models.m.overrides[0]", "package"),
    ("models.m.train_on", "c", "models.m.train_on", "unknown dataset"),
    ("models.m.test_on", ["a", "zzz"], "models.m.test_on[1]", "unknown dataset"),
    ("embedded.datasets", {"a": ["data=synthetic"]}, "embedded.datasets.b", "stand-in"),
    ("references.0.values.m.a", "high", "references[0].values.m.a", "number"),
    ("references.0.metric", "video.auc", "references[0].metric", "metrics"),
    ("baseline.from", "nobody", "baseline.from", "unknown model"),
    ("datasets.a.overrides", "data=ffpp", "datasets.a.overrides", "list"),
])
def test_spec_errors_name_the_file_and_the_key(tmp_path: Path, path: str, value: object, key: str,
                                              words: str) -> None:
    spec_path = _write(tmp_path, _mutate(path, value))
    with pytest.raises(SpecError) as info:
        load_spec(spec_path)
    assert isinstance(info.value, FaceforgeError)
    message = str(info.value)
    assert message.startswith(f"{spec_path}: {key}: "), message
    assert words in message


def test_imported_weights_are_file_names_in_one_folder(tmp_path: Path) -> None:
    data = copy.deepcopy(MINIMAL)
    data["imported"] = {"w": {"label": "W", "weights": "../../etc/passwd", "test_on": ["a"]}}
    data["weights_dir"] = {"env": "SOME_DIR", "default": "weights"}
    with pytest.raises(SpecError, match=r"imported\.w\.weights: '\.\./\.\./etc/passwd' is not allowed"):
        load_spec(_write(tmp_path, data))
    data["imported"]["w"]["weights"] = "w.h5"
    del data["weights_dir"]
    with pytest.raises(SpecError, match="weights_dir: missing"):
        load_spec(_write(tmp_path, data))


def test_unreadable_and_invalid_yaml_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad\.yaml: \(file\): not valid YAML"):
        load_spec(bad)
    assert experiment_main([str(bad)]) == 2


def test_override_check_allows_env_and_config_interpolation() -> None:
    assert check_override("data.root=${oc.env:FFPP_ROOT}") is None
    assert check_override("data.faces_dir=${paths.data_dir}/faces/x") is None
    assert check_override("~data.methods") is None
    assert check_override("data.root=${oc.env:X,/default/path}") is None
    assert "interpolated" in check_override("data.root=${python:os.getcwd}")
    for choice in ("model=meso4", "data=ffpp", "+experiment=vrn_300wlp", "trainer=gpu", "~callbacks.channels_last",
                   "callbacks=none", "model.net.backbone=tiny"):
        assert check_override(choice) is None, choice


class FakeRunner:
    """Stands in for train.py / evaluate.py: writes what they write, or fails for chosen runs."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, cmd: list[str], log_path: Path, cwd: Path) -> int:
        self.calls.append(cmd)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("log\n", encoding="utf-8")
        args = dict(a.split("=", 1) for a in cmd[2:] if "=" in a)
        run_dir = Path(args["paths.log_dir"]) / ("train" if cmd[1].endswith("train.py") else "eval") / "runs" / \
            args["run_name"]
        if args["run_name"] in self.fail:
            return 1
        run_dir.mkdir(parents=True, exist_ok=True)
        if cmd[1].endswith("train.py"):
            ckpt = run_dir / "checkpoints" / "epoch_001.ckpt"
            ckpt.parent.mkdir(exist_ok=True)
            ckpt.write_bytes(b"weights of " + args["run_name"].encode())
            (run_dir / "metrics.json").write_text(json.dumps({"best_checkpoint": str(ckpt)}), encoding="utf-8")
            (run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": int(args["seed"]),
                                                                 "data": {"faces_dir": None}}), encoding="utf-8")
        else:
            import hashlib

            sha = hashlib.sha256(Path(args["ckpt_path"]).read_bytes()).hexdigest()
            auc = 0.75
            (run_dir / "results.json").write_text(json.dumps(
                {"checkpoint": {"sha256": sha}, "data": {"name": "x", "data_dir": ""},
                 "metrics": {"frame": {"auc": auc}, "baseline": {"frame": {"auc": 0.5}}}}), encoding="utf-8")
        return 0


def test_resumes_finished_runs_and_reports_failures(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, MINIMAL))
    out = tmp_path / "out"
    runner = FakeRunner(fail={"m__on__b"})
    result = run_experiment(spec, out, profile="embedded", runner=runner, project_root=ROOT)
    assert len(runner.calls) == 3 and result.failed
    table = build_table(result)
    row = next(r for r in table["rows"] if r["kind"] == "reproduced")
    assert row["cells"]["a/frame.auc"]["status"] == "ok" and row["cells"]["b/frame.auc"]["status"] == "failed"
    ref = next(r for r in table["rows"] if r["kind"] == "reference")
    assert ref["cells"]["a/frame.auc"]["value"] == 0.6 and ref["weights"] == "published [1]"
    assert table["sources"][0]["source"] == "Paper X"
    (failure,) = table["failures"]
    assert failure["log"] == "logs/eval_m__on__b.log" and (out / failure["log"]).is_file()
    md, csv_path, _ = write_tables(result)
    assert "failed" in md.read_text() and "logs/eval_m__on__b.log" in md.read_text()
    assert ",b,frame.auc,,failed," in csv_path.read_text()
    # embedded overrides were used, the runner owns seed / run_name / log_dir
    train_cmd = runner.calls[0]
    assert "data.builder.seed=0" in train_cmd and "seed=3" in train_cmd and "test=false" in train_cmd
    # rerun: training and the finished evaluation are skipped, the failed evaluation is tried again
    runner2 = FakeRunner()
    result2 = run_experiment(spec, out, profile="embedded", runner=runner2, project_root=ROOT)
    assert [c[2:] for c in runner2.calls] == [c[2:] for c in runner.calls[2:]]
    assert not result2.failed
    assert [r.status for r in result2.runs] == ["skipped"]
    assert sorted(e.status for e in result2.evaluations) == ["ok", "skipped"]
    prov = json.loads(write_provenance(result2, "t0", ROOT, argv=["x"]).read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", prov["runs"][0]["checkpoint_sha256"])
    assert prov["runs"][0]["resolved_config"]["seed"] == 3


def test_a_command_line_override_hydra_refuses_stops_before_any_run(tmp_path: Path) -> None:
    from faceforge.experiments.runner import ExperimentError

    spec = load_spec(_write(tmp_path, MINIMAL))
    runner = FakeRunner()
    with pytest.raises(ExperimentError, match=r"--override data\.batchsize=4: Could not override 'data\.batchsize'"):
        run_experiment(spec, tmp_path / "out", profile="embedded", runner=runner, project_root=ROOT,
                       extra_overrides=["data.batchsize=4"])
    assert runner.calls == [] and not (tmp_path / "out").exists()
    run_experiment(spec, tmp_path / "ok", profile="embedded", runner=runner, project_root=ROOT,
                   extra_overrides=["data.batch_size=4"])
    assert runner.calls and all("data.batch_size=4" in call for call in runner.calls)


def test_evaluate_only_trains_nothing_and_marks_missing_checkpoints(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, MINIMAL))
    runner = FakeRunner()
    result = run_experiment(spec, tmp_path / "out", profile="embedded", evaluate_only=True, runner=runner,
                            project_root=ROOT)
    assert runner.calls == [] and result.failed
    assert result.runs[0].status == "missing"
    assert {e.status for e in result.evaluations} == {"missing"}


def test_failed_training_makes_the_command_exit_nonzero(tmp_path: Path) -> None:
    """A real train.py that refuses its data (no such root) fails fast; the table says failed, exit status 1."""
    data = copy.deepcopy(MINIMAL)
    data["embedded"]["datasets"]["a"] = ["data=ffpp", f"data.root={tmp_path / 'no_such_root'}"]
    data["models"]["m"]["test_on"] = ["a"]
    spec_path = _write(tmp_path, data)
    out = tmp_path / "out"
    status = experiment_main([str(spec_path), "--profile", "embedded", "--out", str(out),
                              "-o", f"paths.data_dir={tmp_path / 'data'}", "-o", "logger=none"])
    assert status == 1
    md = (out / "tiny.md").read_text()
    assert "training failed" in md and "logs/train_m.log" in md
    assert (out / "logs" / "train_m.log").is_file()


@pytest.mark.slow
def test_embedded_experiment_rerun_gives_identical_tables(tmp_path: Path) -> None:
    """Meso-4 of experiments/meso_ffpp_c23.yaml on the embedded profile, twice into two folders with the same seed:
    byte-identical markdown / CSV / JSON tables, and provenance with the commit, seeds and checkpoint hashes."""
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        proc = subprocess.run([sys.executable, str(ROOT / "experiment.py"), str(ROOT / "experiments" /
                                                                                  "meso_ffpp_c23.yaml"),
                               "--profile", "embedded", "--out", str(out), "--only", "meso4",
                               "-o", f"paths.data_dir={tmp_path / 'data'}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            logs = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-2000:]
                           for p in sorted((out / "logs").glob("*.log")))
            pytest.fail(f"experiment.py exited with {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
                        f"{logs}")
    for suffix in (".md", ".csv", ".json"):
        first, second = ((o / "meso_ffpp_c23").with_suffix(suffix).read_bytes() for o in outs)
        assert first == second, suffix
    table = json.loads((outs[0] / "meso_ffpp_c23.json").read_text())
    assert [r["kind"] for r in table["rows"]] == ["reproduced", "reference", "baseline"]
    assert all(c["status"] == "ok" and c["value"] is not None for c in table["rows"][0]["cells"].values())
    assert str(tmp_path) not in (outs[0] / "meso_ffpp_c23.md").read_text()
    prov = json.loads((outs[0] / "provenance.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", prov["git"]["commit"]) and "dirty" in prov["git"]
    assert prov["seed"] == 42
    (run,) = prov["runs"]
    assert run["seed"] == 42 and re.fullmatch(r"[0-9a-f]{64}", run["checkpoint_sha256"])
    assert run["resolved_config"]["seed"] == 42 and run["dataset"]["built_with"] is not None
    assert run["dataset"]["index_sha256"]
    assert len(prov["evaluations"]) == 3
    assert all(e["seed"] == 42 and e["weights_sha256"] == run["checkpoint_sha256"] for e in prov["evaluations"])
