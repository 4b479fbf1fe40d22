"""Exact resume: a run stopped at an epoch end, stopped by SIGTERM / SIGUSR1 mid-epoch, or killed mid-epoch, and
resumed with ``ckpt_path=last``, ends with the weights, metrics and CSV history of the uninterrupted run; the run
folder keeps every attempt's record; a resume that cannot work is refused in one line before anything is written.

End to end through train.py subprocesses (Meso-4 on tiny synthetic data: 16 training faces in batches of 4, so 4
steps per epoch, 3 epochs), plus the pieces (checks, CSV continuation, attempt records) in-process.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from faceforge.runs.loggers import ResumableCSVLogger
from faceforge.runs.resume import ResumeError, check_resume, start_attempt
from tests.cli import run_cli
from tests.test_reproducibility import assert_same_run

TINY = ["data.builder.num_videos=8", "data.builder.frames_per_video=4", "data.batch_size=4"]
STEPS_PER_EPOCH = 4


def _args(base: Path, name: str, *overrides: str) -> list[str]:
    return [f"paths.log_dir={base / 'logs'}", f"paths.data_dir={base / 'data'}", f"run_name={name}", *TINY,
            *overrides]


def _env() -> dict[str, str]:
    return {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def _run_expecting(project_root: Path, args: list[str], returncode: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=project_root, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == returncode, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(base: Path, project_root: Path) -> Path:
    """The uninterrupted run: 3 epochs."""
    run_cli(project_root, "train.py", *_args(base, "reference", "trainer.max_epochs=3", "logger=csv"))
    return base / "logs" / "train" / "runs" / "reference"


# ---------------------------------------------------------------------------------------------------- end to end
def test_stop_after_an_epoch_and_resume_equals_the_uninterrupted_run(reference: Path, base: Path,
                                                                     project_root: Path) -> None:
    run = base / "logs" / "train" / "runs" / "stopped"
    run_cli(project_root, "train.py", *_args(base, "stopped", "trainer.max_epochs=1", "logger=wandb"))
    first_rows = _csv_rows(run)
    first_files = {k: v for k, v in _files(run).items() if k == "config.yaml" or k.startswith(".hydra/")}
    assert set(first_files) == {"config.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"}

    run_cli(project_root, "train.py", *_args(base, "stopped", "trainer.max_epochs=3", "logger=wandb",
                                             "ckpt_path=last"))
    assert_same_run(reference, run)
    # the history is continued, not restarted: the first attempt's training rows are still there, in front (its
    # test rows, at the step where training went on, are replaced by what the resumed run logged there)
    rows = _csv_rows(run)
    kept = [r for r in first_rows if int(r["step"]) < STEPS_PER_EPOCH]
    assert len(kept) >= 3 and rows[:len(kept)] == kept and len(rows) > len(first_rows)
    # nothing the first attempt wrote about itself was overwritten; the second attempt has its own record
    assert {k: v for k, v in _files(run).items() if k in first_files} == first_files
    info = json.loads((run / "run_info.json").read_text())
    one, two = info["attempts"]
    assert (one["attempt"], one["status"], one["resumed_from"], one["config"]) == (1, "finished", None, "config.yaml")
    assert two["status"] == "finished" and two["config"] == "attempts/002/config.yaml"
    assert two["resumed_from"]["epoch"] == 0 and two["resumed_from"]["mid_epoch"] is False
    assert two["config_changes"]["trainer.max_epochs"] == [1, 3] and "ckpt_path=last" in " ".join(two["command"])
    assert "max_epochs: 3" in (run / "attempts" / "002" / "config.yaml").read_text()
    assert "trainer.max_epochs=3" in (run / "attempts" / "002" / ".hydra" / "overrides.yaml").read_text()
    assert info["command"] == one["command"] and info["seed"] == 42
    # both attempts logged to one W&B run (offline: one folder per attempt, the same run id)
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert ids == {info["wandb_run_id"]} and len(list((run / "wandb").glob("offline-run-*"))) == 2


def test_sigkill_mid_epoch_then_resume_redoes_the_epoch(reference: Path, base: Path, project_root: Path) -> None:
    run = base / "logs" / "train" / "runs" / "killed"
    kill = ["+callbacks.kill._target_=tests.signal_helpers.SignalAt", f"+callbacks.kill.step={STEPS_PER_EPOCH + 2}",
            "+callbacks.kill.signum=SIGKILL"]
    _run_expecting(project_root, _args(base, "killed", "trainer.max_epochs=3", "logger=csv", *kill), -signal.SIGKILL)
    ckpt = _ckpt(run)  # the last epoch-end checkpoint: the killed epoch is lost and will be redone
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, STEPS_PER_EPOCH)
    assert json.loads((run / "run_info.json").read_text())["attempts"][0]["status"] == "running"
    run_cli(project_root, "train.py", *_args(base, "killed", "trainer.max_epochs=3", "logger=csv", "ckpt_path=last"))
    assert_same_run(reference, run)


def test_sigterm_from_outside_mid_epoch_writes_a_checkpoint_and_resume_equals_uninterrupted(
        reference: Path, base: Path, project_root: Path) -> None:
    run = base / "logs" / "train" / "runs" / "terminated"
    marker = base / "terminated.at"
    pause = ["+callbacks.pause._target_=tests.signal_helpers.PauseAt", f"+callbacks.pause.step={STEPS_PER_EPOCH + 2}",
             f"+callbacks.pause.marker={marker}"]
    proc = subprocess.Popen([sys.executable, "train.py",
                             *_args(base, "terminated", "trainer.max_epochs=3", "logger=csv", *pause)],
                            cwd=project_root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.is_file():  # the run is two steps into its second epoch, after the first last.ckpt
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("faceforge:")]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "ckpt_path=last" in lines[0]
    ckpt = _ckpt(run)  # written mid-epoch, after the batch that was running
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, STEPS_PER_EPOCH + 2)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert json.loads((run / "run_info.json").read_text())["attempts"][0]["status"] == "interrupted by SIGTERM"
    run_cli(project_root, "train.py", *_args(base, "terminated", "trainer.max_epochs=3", "logger=csv",
                                             "ckpt_path=last"))
    assert_same_run(reference, run)
    info = json.loads((run / "run_info.json").read_text())
    assert info["attempts"][1]["resumed_from"]["mid_epoch"] is True


@pytest.mark.slow
def test_sigusr1_mid_epoch_with_worker_processes(reference: Path, base: Path, project_root: Path) -> None:
    run = base / "logs" / "train" / "runs" / "usr1"
    workers = ["data.num_workers=2", "data.persistent_workers=true", "trainer.max_epochs=3", "logger=csv"]
    usr1 = ["+callbacks.sig._target_=tests.signal_helpers.SignalAt", f"+callbacks.sig.step={2 * STEPS_PER_EPOCH + 1}",
            "+callbacks.sig.signum=SIGUSR1"]
    _run_expecting(project_root, _args(base, "usr1", *workers, *usr1), 128 + signal.SIGUSR1)
    assert _ckpt(run)["global_step"] == 2 * STEPS_PER_EPOCH + 1  # in the last epoch: its partial train metrics
    run_cli(project_root, "train.py", *_args(base, "usr1", *workers, "ckpt_path=last"))
    assert_same_run(reference, run)


@pytest.mark.slow
def test_sigterm_inside_a_gradient_accumulation_window(base: Path, project_root: Path) -> None:
    """With accumulate_grad_batches=2 a signal after the first batch of a window stops after the second (the
    half-accumulated gradients are in no checkpoint), and the resumed run equals the uninterrupted one."""
    acc = ["+trainer.accumulate_grad_batches=2", "trainer.max_epochs=3", "logger=csv"]
    run_cli(project_root, "train.py", *_args(base, "acc_reference", *acc))
    run = base / "logs" / "train" / "runs" / "acc_term"
    term = ["+callbacks.sig._target_=tests.signal_helpers.SignalAt", f"+callbacks.sig.batch={STEPS_PER_EPOCH + 1}",
            "+callbacks.sig.signum=SIGTERM"]  # the first batch of the second epoch: mid-window
    _run_expecting(project_root, _args(base, "acc_term", *acc, *term), 128 + signal.SIGTERM)
    ckpt = _ckpt(run)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2}]
    assert ckpt["global_step"] == (STEPS_PER_EPOCH + 2) // 2  # the window's optimiser step was taken
    run_cli(project_root, "train.py", *_args(base, "acc_term", *acc, "ckpt_path=last"))
    assert_same_run(base / "logs" / "train" / "runs" / "acc_reference", run)


@pytest.mark.slow
def test_sigkill_with_validation_twice_an_epoch(base: Path, project_root: Path) -> None:
    """trainer.val_check_interval=0.5: last.ckpt is written at epoch ends only, so a killed run redoes its
    epoch and the CSV history (epoch means included) equals the uninterrupted run's."""
    half = ["+trainer.val_check_interval=0.5", "trainer.max_epochs=3", "logger=csv"]
    run_cli(project_root, "train.py", *_args(base, "half_reference", *half))
    run = base / "logs" / "train" / "runs" / "half_kill"
    kill = ["+callbacks.sig._target_=tests.signal_helpers.SignalAt", f"+callbacks.sig.step={STEPS_PER_EPOCH + 3}",
            "+callbacks.sig.signum=SIGKILL"]  # after the second epoch's mid-epoch validation
    _run_expecting(project_root, _args(base, "half_kill", *half, *kill), -signal.SIGKILL)
    assert _ckpt(run)["global_step"] == STEPS_PER_EPOCH  # the first epoch's end, not the mid-epoch validation
    run_cli(project_root, "train.py", *_args(base, "half_kill", *half, "ckpt_path=last"))
    assert_same_run(base / "logs" / "train" / "runs" / "half_reference", run)


@pytest.mark.slow
def test_plateau_scheduler_takes_every_step_across_resumes(base: Path, project_root: Path) -> None:
    """ReduceLROnPlateau steps after the epoch-end checkpoint, and Lightning skips it for an epoch resumed mid-way:
    the run takes those steps after the resume (a SIGTERM in epoch 1, then a stop at the end of epoch 1)."""
    runs = base / "logs" / "train" / "runs"
    plateau = ["model.scheduler={name:plateau,patience:0,factor:0.5,threshold:0.5}", "logger=csv"]
    run_cli(project_root, "train.py", *_args(base, "plateau_ref", "trainer.max_epochs=4", *plateau))
    term = ["+callbacks.sig._target_=tests.signal_helpers.SignalAt", f"+callbacks.sig.step={STEPS_PER_EPOCH + 1}",
            "+callbacks.sig.signum=SIGTERM"]
    _run_expecting(project_root, _args(base, "plateau", "trainer.max_epochs=2", *plateau, *term), 143)
    run_cli(project_root, "train.py", *_args(base, "plateau", "trainer.max_epochs=2", *plateau, "ckpt_path=last"))
    run_cli(project_root, "train.py", *_args(base, "plateau", "trainer.max_epochs=4", *plateau, "ckpt_path=last"))
    assert_same_run(runs / "plateau_ref", runs / "plateau")
    lrs = [float(r["lr-Adam"]) for r in _csv_rows(runs / "plateau") if "lr-Adam" in r]
    assert len(lrs) == 4 and lrs[-1] < lrs[0]  # the schedule did reduce the rate


def test_a_resume_that_cannot_work_says_so_in_one_line_and_writes_nothing(reference: Path, base: Path,
                                                                          project_root: Path) -> None:
    runs = base / "logs" / "train" / "runs"
    shutil.copytree(reference, runs / "copy")
    before = _files(runs / "copy")
    for overrides, expect in ((["model=mesoinception4", "ckpt_path=last"], "model.net._target_"),
                              (["data.image_size=128", "ckpt_path=last"], "data.image_size: 256 -> 128"),
                              ([], "already holds a run")):
        proc = _run_expecting(project_root, _args(base, "copy", "trainer.max_epochs=5", "logger=csv", *overrides), 2)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("faceforge: ResumeError:") and expect in lines[0], proc.stderr
    assert _files(runs / "copy") == before  # not one byte changed, train.log included


# ---------------------------------------------------------------------------------------------------- the pieces
def _ckpt_dict(task: str = "faceforge.tasks.detection.DetectionTask", net: str = "_target_: x.Meso4\ndropout: 0.5\n",
               data: dict | None = None) -> dict:
    return {"faceforge": {"task_class": task}, "hyper_parameters": {"net_spec": net, "loss": "bce"},
            "datamodule_hyper_parameters": data or {"image_size": 256, "clip_length": None}}


def _cfg(net: dict | None = None, data: dict | None = None, loss: str = "bce"):
    return OmegaConf.create({"model": {"_target_": "faceforge.tasks.detection.DetectionTask", "loss": loss,
                                       "net": net or {"_target_": "x.Meso4", "dropout": 0.5}},
                             "data": data or {"image_size": 256, "clip_length": None}})


def test_a_checkpoint_with_a_malformed_position_is_a_resume_error() -> None:
    from faceforge.runs.resume import checkpoint_position

    assert checkpoint_position({"epoch": 2, "global_step": 8, "callbacks": {}}) == \
        {"epoch": 2, "global_step": 8, "mid_epoch": False}
    for bad in ({"epoch": "x", "global_step": 1}, {"epoch": 1, "global_step": 1, "callbacks": [1]},
                {"epoch": 1.5, "global_step": 1}):
        with pytest.raises(ResumeError, match="last.ckpt: its epoch"):
            checkpoint_position(bad, "run/last.ckpt")


def test_resume_checks_name_each_difference() -> None:
    check_resume(_ckpt_dict(), _cfg(), "last.ckpt")  # the same settings pass
    cases = [(_cfg(net={"_target_": "x.Meso4", "dropout": 0.2}), "model.net.dropout: 0.5 -> 0.2"),
             (_cfg(loss="mse"), "model.loss: bce -> mse"),
             (_cfg(data={"image_size": 256, "clip_length": 10}), "data.clip_length: null -> 10"),
             (_cfg(data={"image_size": 112, "clip_length": None}), "data.image_size: 256 -> 112")]
    for cfg, expect in cases:
        with pytest.raises(ResumeError, match=expect.replace(".", r"\.")):
            check_resume(_ckpt_dict(), cfg, "last.ckpt")
    volume = {"network": {"image_size": 64, "volume_depth": 64}}
    with pytest.raises(ResumeError, match="data.volume_depth: 64 -> 200"):  # an older checkpoint (data.network)
        check_resume(_ckpt_dict(data=volume), _cfg(data={"image_size": 64, "volume_depth": 200}), "x")
    with pytest.raises(ResumeError, match="data.volume_depth: 64 -> 200"):
        check_resume(_ckpt_dict(data={"image_size": 64, "volume_depth": 64}),
                     _cfg(data={"image_size": 64, "volume_depth": 200}), "x")
    with pytest.raises(ResumeError, match="not written by a faceforge task"):
        check_resume({**_ckpt_dict(), "faceforge": {}}, _cfg(), "x")


def test_csv_logger_continues_the_file_and_drops_steps_logged_again(tmp_path: Path) -> None:
    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    for step in range(6):
        first.log_metrics({"loss": float(step)}, step=step)
    first.save()
    second = ResumableCSVLogger(tmp_path, name="csv", version="")  # resumed from step 4: steps 4, 5 come again
    second.log_metrics({"loss": 40.0, "acc": 0.5}, step=4)
    second.log_metrics({"loss": 50.0}, step=5)
    second.save()
    text = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert text[0] == "acc,loss,step"
    assert text[1:] == ["," + f"{s}.0,{s}" for s in range(4)] + ["0.5,40.0,4", ",50.0,5"]


def test_attempts_are_recorded_without_overwriting_earlier_ones(tmp_path: Path) -> None:
    (tmp_path / "run_info.json").write_text(json.dumps({"command": ["train.py"], "seed": 1}))  # an older record
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    record = start_attempt(tmp_path, OmegaConf.create({"seed": 1, "run_name": "r"}), tmp_path, "ckpt", {"epoch": 2})
    assert record["attempt"] == 2 and record["config"] == "attempts/002/config.yaml" and record["wandb_run_id"]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert [a["attempt"] for a in info["attempts"]] == [1, 2] and info["command"] == ["train.py"]
    assert info["attempts"][1]["resumed_from"] == {"checkpoint": "ckpt", "epoch": 2}
    assert (tmp_path / "config.yaml").read_text() == "seed: 1\n"
