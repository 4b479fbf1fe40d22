"""The ``fixture`` experiment profile and the 3D table on the real fixture files (issue 9).

Fast (no subprocess): the optional ``fixture:`` block of a spec is parsed like ``embedded:``; a spec without it
refuses ``--profile fixture`` naming the profile; the runner hands every subprocess an absolute
``FACEFORGE_FIXTURES`` and refuses the fixture profile when that folder is absent; a fixture table says it is
smoke-size.

Slow (real input, needs the fixtures): ``train.py model=facegan data=w300lp`` a few GAN steps on the one 300W-LP
fixture face, then ``evaluate.py data=aflw2000`` on the AFLW2000-3D fixtures (metrics, trivial baseline, GAN logs,
meshes); and ``experiment.py experiments/reconstruction_3d.yaml --profile fixture`` end to end.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from faceforge.errors import FaceforgeError
from faceforge.experiments.cli import main as experiment_main
from faceforge.experiments.runner import ExperimentError, ExperimentRun, fixtures_dir, run_experiment
from faceforge.experiments.spec import PROFILES, SpecError, load_spec
from faceforge.experiments.tables import build_table

ROOT = Path(__file__).resolve().parents[1]
SPEC_3D = ROOT / "experiments" / "reconstruction_3d.yaml"

MINIMAL = {
    "name": "tiny",
    "seed": 3,
    "metrics": [{"key": "iou", "label": "IoU"}],
    "datasets": {"a": {"label": "A", "overrides": ["data=w300lp", "data.root=${oc.env:A_ROOT}"]},
                 "b": {"label": "B", "overrides": ["data=aflw2000", "data.root=${oc.env:B_ROOT}"]}},
    "models": {"m": {"label": "M", "overrides": ["model=vrn"], "train_on": "a", "test_on": ["b"]}},
    "embedded": {"datasets": {"a": ["data=synthetic_3d", "data.builder.seed=0"],
                              "b": ["data=synthetic_3d", "data.builder.seed=1"]}},
}
FIXTURE_BLOCK = {
    "description": "one face",
    "datasets": {"a": ["data=w300lp", "data.root=${oc.env:FACEFORGE_FIXTURES,../shared/fixtures}/face3d_300wlp"],
                 "b": ["data=aflw2000", "data.root=${oc.env:FACEFORGE_FIXTURES,../shared/fixtures}/prnet_aflw2000"]},
    "models": {"m": ["model=vrn", "model.net.features=32"]},
    "train_overrides": ["trainer=cpu", "trainer.max_epochs=2"],
}


def _write(tmp_path: Path, data: object, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _with_fixture(**changes: object) -> dict:
    data = copy.deepcopy(MINIMAL)
    data["fixture"] = {**copy.deepcopy(FIXTURE_BLOCK), **changes}
    return data


class RecordingRunner:
    """Records each command and the FACEFORGE_FIXTURES its subprocess would see; runs nothing (exit 1)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, cmd: list[str], log_path: Path, cwd: Path) -> int:
        self.calls.append((cmd, os.environ.get("FACEFORGE_FIXTURES")))
        return 1


# ------------------------------------------------------------------ fast: the spec and the runner


def test_fixture_is_a_profile_and_its_block_parses_like_embedded(tmp_path: Path) -> None:
    assert PROFILES == ("real", "embedded", "fixture")
    spec = load_spec(_write(tmp_path, _with_fixture()))
    assert set(spec.profiles) == {"real", "embedded", "fixture"}
    prof = spec.profiles["fixture"]
    assert prof.name == "fixture" and prof.description == "one face"
    assert prof.datasets["a"].label == "A"  # a stand-in keeps the real dataset's label
    assert prof.datasets["b"].overrides[1].startswith("data.root=${oc.env:FACEFORGE_FIXTURES,")
    assert prof.model_args(spec.models[0]) == ("model=vrn", "model.net.features=32")
    assert prof.train_overrides == ("trainer=cpu", "trainer.max_epochs=2") and prof.eval_overrides == ()
    # a spec without the block offers only real and embedded
    assert set(load_spec(_write(tmp_path, MINIMAL, "plain.yaml")).profiles) == {"real", "embedded"}


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"datasets": {"a": ["data=w300lp"]}}, "fixture.datasets.b", "stand-in"),
    ({"datasets": {**FIXTURE_BLOCK["datasets"], "c": ["data=w300lp"]}}, "fixture.datasets.c", "not a key"),
    ({"models": {"zz": ["model=vrn"]}}, "fixture.models.zz", "not an id"),
    ({"train_overrides": ["model._target_=os.system"]}, "fixture.train_overrides[0]", "_target_"),
    ({"eval_overrides": ["paths.data_dir=/x"]}, "fixture.eval_overrides[0]", "paths.*"),
    ({"description": ["not", "text"]}, "fixture.description", "string"),
    ({"colour": "red"}, "fixture.colour", "unknown key"),
])
def test_a_bad_fixture_block_is_refused_naming_the_key(tmp_path: Path, change: dict, key: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, _with_fixture(**change)))
    assert f": {key}: " in str(info.value) and words in str(info.value)
    assert isinstance(info.value, FaceforgeError)


def test_a_spec_without_a_fixture_block_refuses_the_fixture_profile(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, MINIMAL)
    runner = RecordingRunner()
    with pytest.raises(ExperimentError, match=r"offers no 'fixture' profile \(it has no fixture: block; its "
                                              r"profiles: real, embedded\)"):
        run_experiment(load_spec(path), tmp_path / "out", profile="fixture", runner=runner, project_root=ROOT)
    assert runner.calls == []
    assert experiment_main([str(path), "--profile", "fixture", "--out", str(tmp_path / "out")]) == 2
    assert "offers no 'fixture' profile" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_fixture_profile_needs_the_fixtures_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEFORGE_FIXTURES", str(tmp_path / "no_fixtures_here"))
    runner = RecordingRunner()
    with pytest.raises(ExperimentError, match="no_fixtures_here is not a folder.*FACEFORGE_FIXTURES"):
        run_experiment(load_spec(_write(tmp_path, _with_fixture())), tmp_path / "out", profile="fixture",
                       runner=runner, project_root=ROOT)
    assert runner.calls == []


def test_subprocesses_see_an_absolute_fixtures_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (tmp_path / "shared" / "fixtures").mkdir(parents=True)
    project.mkdir()
    spec = load_spec(_write(tmp_path, _with_fixture()))
    # unset: <project root>/../shared/fixtures, absolute; the variable is unset again afterwards
    monkeypatch.delenv("FACEFORGE_FIXTURES", raising=False)
    assert fixtures_dir(project) == (tmp_path / "shared" / "fixtures").resolve()
    runner = RecordingRunner()
    result = run_experiment(spec, tmp_path / "out", profile="fixture", runner=runner, project_root=project)
    assert [env for _, env in runner.calls] == [str((tmp_path / "shared" / "fixtures").resolve())]
    assert "FACEFORGE_FIXTURES" not in os.environ
    cmd = runner.calls[0][0]
    assert "data.root=${oc.env:FACEFORGE_FIXTURES,../shared/fixtures}/face3d_300wlp" in cmd
    assert "model.net.features=32" in cmd and "model=vrn" in cmd and "trainer.max_epochs=2" in cmd
    assert result.failed and result.runs[0].status == "failed"
    # relative: taken against the project root, and the previous value comes back afterwards
    (project / "fx").mkdir()
    monkeypatch.setenv("FACEFORGE_FIXTURES", "fx")
    runner = RecordingRunner()
    run_experiment(spec, tmp_path / "out2", profile="fixture", runner=runner, project_root=project)
    assert [env for _, env in runner.calls] == [str((project / "fx").resolve())]
    assert os.environ["FACEFORGE_FIXTURES"] == "fx"


def test_a_fixture_table_says_it_is_smoke_size(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, _with_fixture()))
    note = build_table(ExperimentRun(spec, spec.profiles["fixture"], tmp_path, [], [], []))["profile_note"]
    assert note.startswith("Profile `fixture`: a SMOKE-SIZE table on a handful of real samples")
    assert "(one face)" in note and "not comparable with papers" in note
    assert "A: `data=w300lp" in note and "B: `data=aflw2000" in note  # the training stand-in is named too
    embedded = build_table(ExperimentRun(spec, spec.profiles["embedded"], tmp_path, [], [], []))["profile_note"]
    assert "stand-in on embedded data" in embedded and "SMOKE" not in embedded


def test_the_3d_spec_has_a_fixture_profile_on_the_fixture_files() -> None:
    spec = load_spec(SPEC_3D)
    prof = spec.profiles["fixture"]
    assert set(prof.datasets) == set(spec.profiles["real"].datasets) == {"w300lp", "aflw2000"}
    assert set(prof.model_overrides) == {m.id for m in spec.models} == {"vrn", "vrn_guided", "vrn_multitask",
                                                                        "facegan"}
    train = " ".join(prof.datasets["w300lp"].overrides)
    assert "${oc.env:FACEFORGE_FIXTURES,../shared/fixtures}/face3d_300wlp" in train
    assert "data.same_split_for_all=true" in train and "data.image_size=64" in train
    assert "${oc.env:FACEFORGE_FIXTURES,../shared/fixtures}/prnet_aflw2000" in " ".join(
        prof.datasets["aflw2000"].overrides)
    assert "1 training face" in prof.description
    assert spec.baseline is not None and spec.baseline.metrics["mesh_nme"] == "baseline_mesh_nme"


# ------------------------------------------------------------------ slow: real input


def _run(script: str, args: list[str], timeout: int = 900) -> None:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, script, *args], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.mark.slow
def test_facegan_trains_on_the_300wlp_fixture_and_evaluates_on_aflw2000(fixtures_dir: Path, tmp_path: Path) -> None:
    """A few GAN steps on the one real 300W-LP face (read in place: nothing is written into the fixtures), then the
    AFLW2000-3D fixtures: IoU and mesh NME beside the trivial baseline's, the GAN's curves, meshes per face."""
    model = [f"data.model_dir={fixtures_dir / '3ddfa'}", f"data.noneck_dir={fixtures_dir / '3ddfa_v2' / 'configs'}"]
    common = [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", "trainer=cpu", "seed=7"]
    _run("train.py", ["model=facegan", "data=w300lp", f"data.root={fixtures_dir / 'face3d_300wlp'}", *model,
                      "data.image_size=64", "data.volume_depth=64", "data.same_split_for_all=true",
                      "data.batch_size=1", "data.num_workers=0", "model.net.generator_features=32",
                      "model.num_val_meshes=4", "trainer.max_epochs=4", "logger=csv", "test=false",
                      "run_name=gan", *common])
    run = tmp_path / "logs" / "train" / "runs" / "gan"
    data_report = json.loads((run / "data_report.json").read_text())
    assert data_report["dataset"] == "w300lp" and data_report["samples_in_index"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_checkpoint"] and 0.0 <= metrics["metrics"]["val/iou"] <= 1.0
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    ks = [float(r["train/k_epoch"]) for r in rows if r.get("train/k_epoch")]
    assert len(ks) == 4 and all(0.0 <= k <= 1.0 for k in ks)  # BEGAN's equilibrium term, one value per step
    for key in ("train/d_loss_epoch", "train/g_loss_epoch", "train/loss_real_epoch", "train/loss_fake_epoch"):
        assert sum(1 for r in rows if r.get(key)) == 4, key
    assert list((run / "meshes" / "epoch_003").glob("noise_*.glb"))  # unconditional samples beside the face

    _run("evaluate.py", [f"ckpt_path={metrics['best_checkpoint']}", "data=aflw2000",
                         f"data.root={fixtures_dir / 'prnet_aflw2000'}", *model, "data.batch_size=4",
                         "logger=none", "run_name=aflw", *common])
    out = tmp_path / "logs" / "eval" / "runs" / "aflw"
    results = json.loads((out / "results.json").read_text())
    m = results["metrics"]
    stored = results["data"]["report"]["splits"]["test"]
    assert stored >= 8 and m["n"] == stored and m["variant"] == "facegan"
    assert 0.0 <= m["iou"] <= 1.0 and 0.0 <= m["baseline_iou"] <= 1.0
    assert m["mesh_nme"] > 0 and m["baseline_mesh_nme"] > 0 and m["n_mesh_nme"] >= 1
    assert "nme" not in m  # the GAN predicts no landmarks: no landmark NME, rather than a made-up one
    assert results["checkpoint"]["sha256"] and results["tested_on"] == "aflw2000"
    # num_val_meshes=4 and a first test batch of 4: predicted and ground-truth meshes of 4 AFLW2000-3D faces
    predicted = sorted(p.name for p in (out / "meshes" / "test").glob("image*.glb"))
    assert len(predicted) == 4 and all((out / "meshes" / "gt" / name).is_file() for name in predicted)
    assert "Mesh NME trivial" in (out / "results.md").read_text()


@pytest.mark.slow
def test_the_3d_table_on_the_fixtures_end_to_end(fixtures_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``experiment.py experiments/reconstruction_3d.yaml --profile fixture``: the four models trained on the
    fixture face and tested on the AFLW2000-3D fixtures, the trivial baseline row, meshes of every test face; a
    rerun into the same folder trains nothing and writes the same table."""
    monkeypatch.setenv("FACEFORGE_FIXTURES", str(fixtures_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "exp"
    argv = [str(SPEC_3D), "--profile", "fixture", "--out", str(out), "-o", f"paths.data_dir={tmp_path / 'data'}"]
    assert experiment_main(argv) == 0
    table = json.loads((out / "reconstruction_3d.json").read_text())
    assert table["profile"] == "fixture" and "SMOKE-SIZE" in table["profile_note"]
    rows = {r["entry"]: r for r in table["rows"]}
    assert set(rows) == {"vrn", "vrn_guided", "vrn_multitask", "facegan", "baseline"} and not table["failures"]
    for entry in ("vrn", "vrn_guided", "vrn_multitask", "facegan"):
        cells = rows[entry]["cells"]
        # every cell measured, or n/a where the model predicts no landmarks (VRN, the GAN: no NME)
        assert all((c["status"] == "ok" and c["value"] is not None) or (c["status"] == "n/a" and c["value"] is None)
                   for c in cells.values()), entry
        assert (cells["aflw2000/nme"]["status"] == "n/a") == (entry in ("vrn", "facegan")), entry
        assert 0.0 <= cells["aflw2000/iou"]["value"] <= 1.0
        assert isinstance(cells["aflw2000/mesh_nme"]["value"], float) and cells["aflw2000/mesh_nme"]["value"] > 0
        meshes = out / "runs" / "eval" / "runs" / f"{entry}__on__aflw2000" / "meshes"
        assert len(list((meshes / "gt").glob("image*.glb"))) == 10  # every AFLW2000-3D fixture face
    for entry in ("vrn_guided", "vrn_multitask"):  # the landmark models report NME per yaw bin
        assert rows[entry]["cells"]["aflw2000/nme"]["value"] > 0
        assert rows[entry]["cells"]["aflw2000/nme_60_90"]["value"] > 0
    assert rows["vrn"]["cells"]["aflw2000/nme"]["value"] is None  # VRN predicts no landmarks: n/a
    base = rows["baseline"]["cells"]
    assert base["aflw2000/iou"]["value"] is not None and base["aflw2000/nme"]["value"] > 0
    assert base["aflw2000/mesh_nme"]["value"] > 0
    md = (out / "reconstruction_3d.md").read_text()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["profile"] == "fixture" and {r["status"] for r in prov["runs"]} == {"ok"}
    root = Path(prov["runs"][0]["resolved_config"]["data"]["root"])
    assert root.resolve() == (ROOT / fixtures_dir / "face3d_300wlp").resolve()  # (../shared may be a symlink)

    assert experiment_main(argv) == 0  # resumed: everything finished is skipped, the table is unchanged
    prov = json.loads((out / "provenance.json").read_text())
    assert {r["status"] for r in prov["runs"]} == {"skipped"}
    assert {e["status"] for e in prov["evaluations"]} == {"skipped"}
    assert (out / "reconstruction_3d.md").read_text() == md
