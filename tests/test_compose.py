"""Every configuration the project offers composes and resolves, in-process (Hydra's compose API, nothing trained):
every model with every data config it can pair with, every option of the optional groups (experiment, debug,
callbacks, trainer, logger, hparams_search), and evaluate.py with every data config. A model's input needs
(``model.input``) must be settings its data configs have; data configs hold no network sizes; an impossible pair
(``model=vrn data=dfdc``, ``model=meso4 data=synthetic_3d``) is refused in one line naming the data that fits."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from faceforge.runs.common import RunConfigError
from faceforge.runs.config_checks import DATA_KINDS, fitting_data_configs, missing_settings
from faceforge.runs.input_needs import apply_input_needs
from faceforge.runs.training import check_run_config

CONF = Path(__file__).resolve().parents[1] / "conf"
BASE_DATA = {"face_base", "video_base"}  # shared bases of other data configs, not choices of their own
OPTIONAL_GROUPS = ("experiment", "debug", "callbacks", "trainer", "logger", "hparams_search")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if p.stem not in BASE_DATA)


@pytest.fixture(scope="module")
def hydra_conf() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


@contextmanager
def _as_job(cfg: DictConfig) -> Iterator[None]:
    """Make ``cfg``'s hydra node the running job's (``${hydra:...}`` resolves, ``hydra_choice`` answers)."""
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]


def _compose(config: str, overrides: list[str]) -> DictConfig:
    """Compose ``config`` with ``overrides``, filling mandatory settings left unset (``data.root`` ...) with
    placeholder paths, as a user's command line would."""
    cfg = compose(config, overrides=overrides, return_hydra_config=True)
    missing = [k for k in missing_settings(cfg) if k != "ckpt_path"]
    if missing:
        cfg = compose(config, overrides=[*overrides, *(f"{k}=/nonexistent/{k}" for k in missing)],
                      return_hydra_config=True)
    return cfg


def _resolve(cfg: DictConfig) -> dict:
    """The whole run configuration resolved (the hydra node left out), as train.py / evaluate.py record it."""
    run = cfg.copy()
    with open_dict(run):
        del run["hydra"]
    with _as_job(cfg):
        out = OmegaConf.to_container(run, resolve=True, throw_on_missing=True)
    assert isinstance(out, dict)
    return out


def _task_of(model: str) -> str:
    cfg = compose("train", overrides=[f"model={model}"])
    return str(cfg.model._target_)


def _pairs() -> list[tuple[str, str]]:
    pairs = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for model in _options("model"):
            fits = fitting_data_configs(_task_of(model))
            pairs += [(model, data) for data in fits]
    return pairs


def test_every_model_and_data_config_is_known_to_the_pairing_check(hydra_conf: None) -> None:
    listed = {name for kind in DATA_KINDS for name in kind.data_configs}
    assert listed == set(_options("data"))
    for model in _options("model"):
        assert fitting_data_configs(_task_of(model)), f"model={model}: its task is in no DATA_KINDS entry"


@pytest.mark.parametrize("model,data", _pairs())
def test_model_composes_with_every_data_config_it_fits(hydra_conf: None, model: str, data: str) -> None:
    cfg = _compose("train", [f"model={model}", f"data={data}"])
    with _as_job(cfg):
        check_run_config(cfg)  # the pairing and the required settings pass
        if cfg.model.get("input") is not None:
            apply_input_needs(cfg, cfg.model.input)  # every input need is a setting of the data config
    resolved = _resolve(cfg)
    assert "network" not in resolved["data"], "a data config holds network sizes"
    assert resolved["model"]["optimizer"]["_target_"].startswith("torch.optim.")
    if "volume_depth" in resolved["data"]:  # 3D: the network's output follows the data's shape
        text = OmegaConf.to_yaml(resolved["model"]["net"])
        assert f"out_depth: {resolved['data']['volume_depth']}" in text or "out_depth" not in text


@pytest.mark.parametrize("group,option", [(g, o) for g in OPTIONAL_GROUPS for o in _options(g)])
def test_every_optional_group_option_composes_and_resolves(hydra_conf: None, group: str, option: str) -> None:
    cfg = _compose("train", [f"{group}={option}"])
    with _as_job(cfg):
        check_run_config(cfg)
    _resolve(cfg)


@pytest.mark.parametrize("data", _options("data"))
def test_evaluate_composes_with_every_data_config(hydra_conf: None, data: str) -> None:
    cfg = _compose("evaluate", ["ckpt_path=/nonexistent/x.ckpt", f"data={data}"])
    _resolve(cfg)


def test_paper_recipes_live_in_experiments(hydra_conf: None) -> None:
    small = _resolve(_compose("train", ["model=vrn_guided"]))
    paper = _resolve(_compose("train", ["experiment=vrn_guided_300wlp"]))
    assert small["data"]["name"] == "synthetic_3d" and small["data"]["image_size"] == 64
    assert small["model"]["net"]["vrn"]["features"] == 64 and small["model"]["optimizer"]["lr"] == 1e-3
    assert paper["data"]["name"] == "w300lp" and (paper["data"]["image_size"], paper["data"]["volume_depth"]) == \
        (192, 200)
    vrn = paper["model"]["net"]["vrn"]
    assert (vrn["features"], vrn["num_stacks"], vrn["depth"], vrn["out_depth"], vrn["output_size"]) == \
        (256, 2, 4, 200, 192)
    assert paper["model"]["net"]["landmark_net"]["num_stacks"] == 2
    assert paper["model"]["optimizer"] == {"_target_": "torch.optim.RMSprop", "lr": 1e-4}
    assert paper["model"]["scheduler"]["milestones"] == [40] and paper["trainer"]["max_epochs"] == 60


def test_model_input_needs_reach_the_data_config(hydra_conf: None) -> None:
    cfg = _compose("train", ["model=resnext_lstm", "data=ffpp"])
    with _as_job(cfg):
        apply_input_needs(cfg, cfg.model.input)
    resolved = _resolve(cfg)
    assert (resolved["data"]["image_size"], resolved["data"]["clip_length"], resolved["data"]["batch_size"]) == \
        (112, 10, 4)
    assert resolved["data"]["builder"]["size"] == 112  # faces are extracted at the size the model needs
    # a command line's data.image_size wins for that run and is recorded as the model's input
    cfg = _compose("train", ["model=resnext_lstm", "data.image_size=48"])
    apply_input_needs(cfg, cfg.model.input, explicit={"data.image_size"}, write_back=True)
    assert cfg.data.image_size == 48 and cfg.model.input.image_size == 48 and cfg.data.clip_length == 10


@pytest.mark.parametrize("model,data,fits", [("vrn", "dfdc", "data=synthetic_3d, data=w300lp or data=aflw2000"),
                                             ("meso4", "synthetic_3d", "data=synthetic, data=ffpp, data=dfdc or "
                                                                       "data=celebdf")])
def test_an_impossible_pair_is_one_line_naming_what_fits(hydra_conf: None, model: str, data: str, fits: str) -> None:
    cfg = _compose("train", [f"model={model}", f"data={data}"])
    with _as_job(cfg), pytest.raises(RunConfigError) as info:
        check_run_config(cfg)
    message = str(info.value)
    assert "\n" not in message and f"model={model}" in message and f"data={data}" in message
    assert message.endswith(f"use {fits}")
