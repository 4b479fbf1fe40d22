"""Checkpoints cannot run code: a task and its network are rebuilt only from faceforge's registry.

Every crafted checkpoint here would, if rebuilt with ``hydra.utils.instantiate`` or by importing the class it names,
create a marker file (or run a shell command that creates one). Each must be refused with a ``CheckpointError``
and leave no marker behind.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from faceforge.errors import FaceforgeError
from faceforge.models.meso import Meso4
from faceforge.registry import (
    MODELS,
    TASKS,
    RegistryError,
    SpecError,
    build_model,
    check_primitive,
    model_class,
    registry_name,
    task_class,
)
from faceforge.tasks.checkpointing import CheckpointError, load_task, read_checkpoint
from faceforge.tasks.detection import DetectionTask

MESO4_SPEC = {"_target_": "faceforge.models.meso.Meso4", "head_activation": "leaky_relu", "dropout": 0.5,
              "bn_momentum": 0.1}


def _checkpoint(net_spec: dict | str, task: str | None = "DetectionTask", task_class_path: str | None = None,
                **hparams) -> dict:
    """A checkpoint as train.py writes it (state_dict, hyper_parameters, faceforge entry) of a Meso-4 task."""
    torch.manual_seed(0)
    real = DetectionTask(net=Meso4(bn_momentum=0.1), net_spec=yaml.safe_dump(MESO4_SPEC))
    ckpt: dict = {"state_dict": real.state_dict(), "hyper_parameters": dict(real.hparams)}
    real.on_save_checkpoint(ckpt)
    ckpt["hyper_parameters"]["net_spec"] = net_spec if isinstance(net_spec, str) else yaml.safe_dump(net_spec)
    ckpt["hyper_parameters"].update(hparams)
    if task is None:
        del ckpt["faceforge"]["task"]
    else:
        ckpt["faceforge"]["task"] = task
    if task_class_path is not None:
        ckpt["faceforge"]["task_class"] = task_class_path
    return ckpt


def _save(tmp_path: Path, ckpt: dict, name: str = "crafted.ckpt") -> Path:
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


class _OpensAFile:
    """Pickles to ``open(marker, "w")``: unpickling it creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------------------------------------------
# The legitimate route keeps working
# ----------------------------------------------------------------------------------------------------------------

def test_new_checkpoints_name_the_task_by_registry_name_and_rebuild(tmp_path):
    written: dict = {}
    DetectionTask(net=Meso4()).on_save_checkpoint(written)
    assert written["faceforge"]["task"] == "DetectionTask"  # the registry name, never imported as a path
    ckpt = _checkpoint(MESO4_SPEC)
    task = load_task(_save(tmp_path, ckpt))
    assert type(task) is DetectionTask and type(task.net) is Meso4 and not task.training
    x = torch.rand(2, 3, 256, 256)
    ref = DetectionTask(net=Meso4(bn_momentum=0.1))
    ref.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        assert torch.equal(task(x), ref.eval()(x))


def test_old_checkpoints_with_the_exact_class_path_still_load(tmp_path):
    ckpt = _checkpoint(MESO4_SPEC, task=None, task_class_path="faceforge.tasks.detection.DetectionTask")
    assert "task" not in ckpt["faceforge"]
    assert type(load_task(_save(tmp_path, ckpt))) is DetectionTask


def test_registry_names_work_as_targets(tmp_path):
    spec = {**MESO4_SPEC, "_target_": "Meso4"}
    assert type(load_task(_save(tmp_path, _checkpoint(spec))).net) is Meso4


def test_nested_registered_networks_build():
    small = {"num_stacks": 1, "features": 16, "depth": 1, "stem_channels": [8, 16]}
    spec = {"_target_": "faceforge.models.vrn.VRNGuided",
            "landmark_net": {"_target_": "faceforge.models.hourglass.StackedHourglass", "num_points": 68,
                             "in_channels": 3, **small},
            "vrn": {"_target_": "VRN", "out_depth": 8, "in_channels": 71, "output_size": 32, **small}}
    net = build_model(spec)
    assert type(net).__name__ == "VRNGuided" and type(net.vrn).__name__ == "VRN"


def test_rebuilding_ignores_the_training_machines_imagenet_file():
    # the checkpoint's own weights replace the backbone's: a path from the training machine is never read
    spec = {"_target_": "ResNeXtLSTM", "backbone": "tiny", "hidden_size": 8,
            "pretrained_weights": "/nonexistent/resnext50_32x4d.pth"}
    assert type(build_model(spec)).__name__ == "ResNeXtLSTM"
    with pytest.raises(FaceforgeError):  # built as the user's own config asks, the file is required
        build_model(spec, rebuild=False)


def test_every_network_and_task_of_the_model_configs_is_registered(project_root):
    def targets(node):
        if isinstance(node, dict):
            if "_target_" in node:
                yield node["_target_"]
            for v in node.values():
                yield from targets(v)
        elif isinstance(node, list):
            for v in node:
                yield from targets(v)

    seen = 0
    for path in sorted((project_root / "conf" / "model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        model = cfg.get("model", cfg)
        assert task_class(model["_target_"]) is not None, path
        for target in targets(model["net"]):
            assert model_class(target).__name__ == target.rsplit(".", 1)[-1], (path, target)
            seen += 1
    assert seen >= 7
    for table in (MODELS, TASKS):
        for name, entry in table.items():
            cls = entry.load()
            assert cls.__name__ == name and f"{cls.__module__}.{cls.__qualname__}" == entry.path
            assert registry_name(cls) == name


# ----------------------------------------------------------------------------------------------------------------
# Crafted network specs
# ----------------------------------------------------------------------------------------------------------------

def _crafted_specs(tmp_path: Path) -> dict[str, dict]:
    marker = tmp_path / "marker"
    evil_pickle = tmp_path / "evil.pt"
    torch.save({"x": _OpensAFile(marker)}, evil_pickle)
    return {
        "builtins.open+_args_": {"_target_": "builtins.open", "_args_": [str(marker), "w"]},
        "builtins.open": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
        "torch.load": {"_target_": "torch.load", "f": str(evil_pickle), "weights_only": False},
        "subprocess.run": {"_target_": "subprocess.run", "args": ["touch", str(marker)]},
        "os.system": {"_target_": "os.system", "command": f"touch {marker}"},
        "nested in a sub-net": {
            "_target_": "faceforge.models.vrn.VRNGuided",
            "landmark_net": {"_target_": "os.system", "command": f"touch {marker}"},
            "vrn": {"_target_": "faceforge.models.vrn.VRN", "num_stacks": 1, "features": 16, "depth": 1}},
        "nested in a list": {**MESO4_SPEC, "dropout": [{"_target_": "os.system", "command": f"touch {marker}"}]},
        "_args_ on a registered net": {**MESO4_SPEC, "_args_": [f"touch {marker}"]},
        "_partial_": {**MESO4_SPEC, "_partial_": True},
        "_recursive_": {**MESO4_SPEC, "_recursive_": False},
        "_convert_": {**MESO4_SPEC, "_convert_": "all"},
        "look-alike path": {**MESO4_SPEC, "_target_": "faceforge.models.meso.os.system"},
        "unregistered faceforge class": {"_target_": "faceforge.models.meso.InceptionLayer", "in_ch": 3, "a": 1,
                                         "b": 1, "c": 1, "d": 1},
        "a task as a network": {"_target_": "DetectionTask"},
        "unknown keyword": {**MESO4_SPEC, "command": f"touch {marker}"},
        "non-primitive value": {**MESO4_SPEC, "dropout": {1, 2}},
    }


@pytest.mark.parametrize("case", [
    "builtins.open+_args_", "builtins.open", "torch.load", "subprocess.run", "os.system", "nested in a sub-net",
    "nested in a list", "_args_ on a registered net", "_partial_", "_recursive_", "_convert_", "look-alike path",
    "unregistered faceforge class", "a task as a network", "unknown keyword", "non-primitive value",
])
def test_crafted_net_spec_is_refused_without_side_effect(tmp_path, case):
    spec = _crafted_specs(tmp_path)[case]
    net_spec = spec if case != "non-primitive value" else yaml.dump(spec)  # a !!set: yaml.safe_dump refuses it
    path = _save(tmp_path, _checkpoint(net_spec))
    with pytest.raises(CheckpointError) as info:
        load_task(path)
    assert not (tmp_path / "marker").exists(), f"{case}: the crafted checkpoint ran code"
    assert "net_spec" in str(info.value) and str(path) in str(info.value)


def test_the_error_names_the_registered_models(tmp_path):
    with pytest.raises(CheckpointError, match="'os.system' is not a registered faceforge model.*Meso4"):
        load_task(_save(tmp_path, _checkpoint({"_target_": "os.system", "command": "true"})))


@pytest.mark.parametrize("net_spec", ["a: &a [*a]\n_target_: Meso4\ndropout: *a\n", "[1, 2]", "{unclosed", "",
                                      "_target_: Meso4\n" + "x: " + "[" * 40 + "]" * 40 + "\n"])
def test_malformed_net_spec_is_a_checkpoint_error(tmp_path, net_spec):
    with pytest.raises(CheckpointError):
        load_task(_save(tmp_path, _checkpoint(net_spec)))


# ----------------------------------------------------------------------------------------------------------------
# Crafted task names and hyperparameters
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,path", [
    ("subprocess.Popen", None), (None, "subprocess.Popen"), ("os.system", None),
    (None, "faceforge.tasks.checkpointing.FaceforgeCheckpointMixin"),  # inside faceforge, but not a task
    (None, "faceforge.tasks.detection.os.system"), ("", "builtins.exec"),
])
def test_task_outside_the_registry_is_refused(tmp_path, monkeypatch, name, path):
    imported = []
    real_import = __import__

    def spy(module, *args, **kwargs):
        imported.append(module)
        return real_import(module, *args, **kwargs)

    ckpt = _checkpoint(MESO4_SPEC, task=name, task_class_path=path)
    file = _save(tmp_path, ckpt)
    monkeypatch.setattr("builtins.__import__", spy)
    with pytest.raises(CheckpointError, match="not a registered faceforge task"):
        load_task(file)
    assert "subprocess" not in imported


def test_hydra_target_in_task_hyperparameters_is_refused(tmp_path):
    marker = tmp_path / "marker"
    ckpt = _checkpoint(MESO4_SPEC, optimizer={"_target_": "builtins.open", "file": str(marker), "mode": "w"})
    with pytest.raises(CheckpointError, match="_target_"):
        load_task(_save(tmp_path, ckpt))
    assert not marker.exists()


@pytest.mark.parametrize("hparams", [{"threshold": torch.tensor(0.5)}, {"loss_fn": "bce"}, {"net": "Meso4"},
                                     {"scheduler": {"name": "step", "_partial_": True}}])
def test_non_primitive_or_unknown_task_hyperparameters_are_refused(tmp_path, hparams):
    with pytest.raises(CheckpointError, match="hyper_parameters|not parameters"):
        load_task(_save(tmp_path, _checkpoint(MESO4_SPEC, **hparams)))


def test_check_primitive_refuses_control_keys_and_objects():
    assert check_primitive({"a": [1, 2.0, "x", None, True, {"b": []}]}) == {"a": [1, 2.0, "x", None, True, {"b": []}]}
    for bad in ({"x": {"_target_": "os.system"}}, {"_args_": []}, {"x": object()}, {1: 2}, [b"bytes"]):
        with pytest.raises(SpecError):
            check_primitive(bad)
    assert issubclass(SpecError, RegistryError) and issubclass(RegistryError, FaceforgeError)


# ----------------------------------------------------------------------------------------------------------------
# Files that are not checkpoints
# ----------------------------------------------------------------------------------------------------------------

def _not_checkpoints(tmp_path: Path) -> dict[str, Path]:
    rng = torch.Generator().manual_seed(0)
    noise = bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist())
    files = {"zero-byte": b"", "random bytes": b"\x13" + noise, "damaged zip": b"PK\x03\x04" + noise,
             "damaged pickle": b"\x80\x02" + noise, "text": b"epoch: 3\nweights: none\n",
             "hdf5": b"\x89HDF\r\n\x1a\n" + noise}
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name.replace(' ', '_')}.ckpt"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("kind", ["zero-byte", "random bytes", "damaged zip", "damaged pickle", "text", "hdf5"])
def test_not_a_checkpoint_gets_a_plain_message(tmp_path, kind):
    path = _not_checkpoints(tmp_path)[kind]
    for read in (read_checkpoint, load_task):
        with pytest.raises(CheckpointError) as info:
            read(path)
        message = str(info.value)
        assert "is not a checkpoint" in message and str(path) in message
        assert "weights_only" not in message and "trusted source" not in message
        # no chained torch error (with its advice) in a traceback either
        assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    marker = tmp_path / "marker"
    ckpt = _checkpoint(MESO4_SPEC)
    ckpt["hyper_parameters"]["evil"] = _OpensAFile(marker)
    path = _save(tmp_path, ckpt)
    with pytest.raises(CheckpointError) as info:
        load_task(path)
    assert not marker.exists()
    message = str(info.value)
    assert "pickled Python objects" in message and "open" in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="is not a checkpoint: it is not a file"):
        read_checkpoint(tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# evaluate.py goes through the same safe path
# ----------------------------------------------------------------------------------------------------------------

def _eval_cfg(project_root: Path, tmp_path: Path, ckpt: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(project_root / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'out'}",
                                              f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path}",
                                              *overrides])


@pytest.mark.parametrize("case", ["builtins.open+_args_", "torch.load", "os.system", "nested in a sub-net"])
def test_evaluate_refuses_crafted_checkpoints(tmp_path, project_root, case):
    from faceforge.runs.evaluation import evaluate

    path = _save(tmp_path, _checkpoint(_crafted_specs(tmp_path)[case]))
    with pytest.raises(CheckpointError):
        evaluate(_eval_cfg(project_root, tmp_path, path))
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "data").exists(), "data was prepared for a checkpoint that cannot be rebuilt"


@pytest.mark.parametrize("data,key,value", [
    ("synthetic_3d", "network", {"image_size": 64, "_target_": "builtins.open", "file": "MARKER", "mode": "w"}),
    ("synthetic", "image_size", {"_target_": "builtins.open", "file": "MARKER", "mode": "w"}),
    ("synthetic", "clip_sampling", "${oc.env:HOME}"),
])
def test_evaluate_refuses_crafted_data_settings(tmp_path, project_root, data, key, value):
    from faceforge.runs.evaluation import evaluate

    marker = tmp_path / "marker"
    if isinstance(value, dict):
        value = {k: (str(marker) if v == "MARKER" else v) for k, v in value.items()}
    ckpt = _checkpoint(MESO4_SPEC)
    ckpt["datamodule_hyper_parameters"] = {key: value}
    with pytest.raises(CheckpointError, match=f"datamodule_hyper_parameters.{key}"):
        evaluate(_eval_cfg(project_root, tmp_path, _save(tmp_path, ckpt), f"data={data}"))
    assert not marker.exists()


@pytest.mark.parametrize("key,value", [("faces_dir", "HIJACK"), ("root", "/"), ("num_workers", 64),
                                       ("builder", "x")])
def test_evaluate_refuses_input_needs_that_are_not_input_settings(tmp_path, project_root, key, value):
    """A checkpoint's ``input`` may only set the shape of what its network takes, never where data are read or
    written: a crafted ``faces_dir`` would make evaluate.py build and read data wherever the file says."""
    from faceforge.runs.evaluation import evaluate

    ckpt = _checkpoint(MESO4_SPEC)
    ckpt["hyper_parameters"]["input"] = {"image_size": 256, key: str(tmp_path / value) if key == "faces_dir" else value}
    with pytest.raises(CheckpointError, match=f"hyper_parameters.input: '{key}' is not an input setting"):
        evaluate(_eval_cfg(project_root, tmp_path, _save(tmp_path, ckpt), "data=synthetic"))
    assert not (tmp_path / "HIJACK").exists() and not (tmp_path / "data").exists()


def test_evaluate_refuses_a_bad_aggregation_or_results_path_before_testing(tmp_path, project_root):
    """Mistakes on the command line are found before the data are prepared and the test pass runs."""
    from faceforge.runs.common import RunConfigError
    from faceforge.runs.evaluation import evaluate
    from faceforge.utils.atomic import OutputPathError

    path = _save(tmp_path, _checkpoint(MESO4_SPEC))
    with pytest.raises(RunConfigError, match="video_aggregation=foo: use one of mean, max, vote"):
        evaluate(_eval_cfg(project_root, tmp_path, path, "data=synthetic", "video_aggregation=foo"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match="afile is a file, not a folder"):
        evaluate(_eval_cfg(project_root, tmp_path, path, "data=synthetic", f"results_path={tmp_path}/afile/r.json"))
    assert not (tmp_path / "data").exists()


def test_cli_reports_a_crafted_checkpoint_in_one_line(tmp_path, project_root):
    """The real command line: exit status 2 and one ``CheckpointError`` line, no traceback, no marker."""
    import subprocess
    import sys

    path = _save(tmp_path, _checkpoint(_crafted_specs(tmp_path)["os.system"]))
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run([sys.executable, "evaluate.py", f"ckpt_path={path}", f"paths.log_dir={tmp_path}",
                           f"paths.data_dir={tmp_path / 'data'}", "run_name=crafted"], cwd=project_root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "CheckpointError" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "marker").exists()


# ----------------------------------------------------------------------------------------------------------------
# Optimisers and schedulers: primitive _target_ specs, built from an allowlist of torch.optim classes
# ----------------------------------------------------------------------------------------------------------------

def test_allowlisted_optimizer_specs_load_and_build(tmp_path):
    from faceforge.tasks.optim import configure_optimization

    ckpt = _checkpoint(MESO4_SPEC, optimizer={"_target_": "torch.optim.RMSprop", "lr": 1e-4},
                       scheduler={"_target_": "torch.optim.lr_scheduler.MultiStepLR", "milestones": [40],
                                  "gamma": 0.1})
    path = _save(tmp_path, ckpt)
    torch.load(path, weights_only=True)  # primitives only
    task = load_task(path)
    out = task.configure_optimizers()
    assert type(out["optimizer"]) is torch.optim.RMSprop and out["optimizer"].defaults["lr"] == 1e-4
    assert type(out["lr_scheduler"]["scheduler"]) is torch.optim.lr_scheduler.MultiStepLR
    # the older {name: ...} specs map to the same allowlisted classes
    legacy = configure_optimization(task.parameters(), {"name": "rmsprop", "lr": 1e-4},
                                    {"name": "multistep", "milestones": [40], "gamma": 0.1})
    assert type(legacy["optimizer"]) is torch.optim.RMSprop
    assert type(legacy["lr_scheduler"]["scheduler"]) is torch.optim.lr_scheduler.MultiStepLR
    old = load_task(_save(tmp_path, _checkpoint(MESO4_SPEC, optimizer={"name": "adam", "lr": 1e-3}), "old.ckpt"))
    assert type(old.configure_optimizers()) is torch.optim.Adam


@pytest.mark.parametrize("key,spec", [
    ("optimizer", {"_target_": "builtins.open", "file": "MARKER", "mode": "w"}),
    ("optimizer", {"_target_": "os.system", "command": "touch MARKER"}),
    ("scheduler", {"_target_": "torch.optim.lr_scheduler.LambdaLR", "lr_lambda": "x"}),  # a callable: not listed
    ("optimizer", {"_target_": "torch.optim.Adam", "lr": {"_target_": "builtins.open", "file": "MARKER"}}),
    ("optimizer", {"_target_": "torch.optim.Adam", "_partial_": True}),
])
def test_optimizer_targets_outside_the_allowlist_are_refused(tmp_path, key, spec):
    marker = tmp_path / "marker"
    spec = {k: (str(marker) if v == "MARKER" else v) for k, v in spec.items()}
    with pytest.raises(CheckpointError, match=f"hyper_parameters.{key}|_target_|_partial_"):
        load_task(_save(tmp_path, _checkpoint(MESO4_SPEC, **{key: spec})))
    assert not marker.exists()


def test_optim_builder_never_imports_a_path():
    from faceforge.tasks.optim import OptimConfigError, build_optimizer, build_scheduler

    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(OptimConfigError, match="not allowed"):
        build_optimizer(params, {"_target_": "subprocess.Popen", "args": ["true"]})
    opt = build_optimizer(params, {"_target_": "torch.optim.SGD", "lr": 0.1})
    with pytest.raises(OptimConfigError, match="not allowed"):
        build_scheduler(opt, {"_target_": "torch.optim.lr_scheduler.LambdaLR"})
    with pytest.raises(OptimConfigError, match="rejected options"):
        build_optimizer(params, {"_target_": "torch.optim.SGD", "learning_rate": 0.1})
