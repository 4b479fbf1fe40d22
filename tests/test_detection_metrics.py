"""Detection metrics (EER, video aggregation, per-method report, accumulating Metric) and detection plots."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from faceforge.metrics import (
    METRIC_KEYS,
    BinaryEER,
    DetectionScores,
    aggregate_by_video,
    binary_detection_metrics,
    binary_eer,
    detection_report,
)
from faceforge.metrics.detection import constant_baseline
from faceforge.visualization import save_confusion_matrix_png, save_roc_curve_png

# ----------------------------------------------------------------------------------------------------------------
# EER
# ----------------------------------------------------------------------------------------------------------------


def test_eer_perfect_and_inverted() -> None:
    target = torch.tensor([0, 0, 1, 1])
    assert float(binary_eer(torch.tensor([0.1, 0.2, 0.8, 0.9]), target)) == pytest.approx(0.0, abs=1e-7)
    assert float(binary_eer(torch.tensor([0.9, 0.8, 0.2, 0.1]), target)) == pytest.approx(1.0, abs=1e-7)


def test_eer_hand_computed_interpolation() -> None:
    # reals score 0.1, 0.6; fakes 0.4, 0.7, 0.8. ROC points (FPR, TPR) by falling threshold:
    # (0,0) (0,1/3) (0,2/3) (1/2,2/3) (1/2,1) (1,1). FPR - FNR goes from -1/3 at (0,2/3) to +1/6 at (1/2,2/3):
    # crossing at 2/3 of that segment -> FPR = 1/3, FNR = 1 - 2/3 = 1/3.
    preds = torch.tensor([0.1, 0.6, 0.4, 0.7, 0.8])
    target = torch.tensor([0, 0, 1, 1, 1])
    assert float(binary_eer(preds, target)) == pytest.approx(1 / 3, abs=1e-6)
    # ties between classes: the ROC is the single segment (0,0)-(1,1), so EER = 1/2
    assert float(binary_eer(torch.tensor([0.5, 0.5]), torch.tensor([0, 1]))) == pytest.approx(0.5)


def test_eer_invariant_to_monotone_transform() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (200,), generator=g)
    preds = (torch.rand(200, generator=g) + 0.3 * target).clamp(0, 1)
    assert float(binary_eer(preds, target)) == pytest.approx(float(binary_eer(preds**3, target)), abs=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")  # compute before update, on purpose
def test_binary_eer_metric_agrees_with_functional_over_batches() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 2, (300,), generator=g)
    preds = (0.6 * torch.rand(300, generator=g) + 0.4 * target * torch.rand(300, generator=g)).clamp(0, 1)
    metric = BinaryEER()
    for chunk_p, chunk_t in zip(preds.split(70), target.split(70)):
        metric.update(chunk_p, chunk_t)
    value = metric.compute()
    assert value.ndim == 0 and value.dtype == torch.float32
    assert float(value) == pytest.approx(float(binary_eer(preds, target)), abs=1e-6)
    assert 0.0 < float(value) < 0.5
    metric.reset()
    assert math.isnan(float(metric.compute()))


def test_eer_single_class_is_nan_and_bad_input_raises() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(float(binary_eer(torch.tensor([0.2, 0.9]), torch.tensor([1, 1]))))
    with pytest.raises(ValueError):
        binary_eer(torch.tensor([0.2, 0.9]), torch.tensor([0, 2]))
    with pytest.raises(ValueError):
        binary_eer(torch.tensor([0.2, 0.9, 0.1]), torch.tensor([0, 1]))
    from faceforge.errors import FaceforgeError
    from faceforge.metrics.detection import DetectionScores

    with pytest.raises(FaceforgeError, match="preds contain NaN: the network produced non-finite outputs"):
        DetectionScores().update(torch.tensor([float("nan"), 0.5]), torch.tensor([1, 0]), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------------------------------------------
# Metric dict
# ----------------------------------------------------------------------------------------------------------------


def test_binary_detection_metrics_hand_case() -> None:
    probs = torch.tensor([0.1, 0.6, 0.4, 0.7, 0.8])
    labels = torch.tensor([0, 0, 1, 1, 1])
    m = binary_detection_metrics(probs, labels)
    assert set(m) == set(METRIC_KEYS)
    assert all(type(v) is float for v in m.values())
    # predicted fake: 0.6, 0.7, 0.8 -> TP 2, FP 1, FN 1, TN 1
    assert m["acc"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    # AUC = fraction of (fake, real) pairs ranked correctly: (0.4>0.1), (0.7>0.1, 0.7>0.6), (0.8>0.1, 0.8>0.6) = 5/6
    assert m["auc"] == pytest.approx(5 / 6)
    assert m["eer"] == pytest.approx(1 / 3, abs=1e-6)
    assert (m["n"], m["n_fake"], m["n_real"]) == (5, 3, 2)
    json.dumps(m)
    # threshold is "prob > threshold": 0.6 is real at threshold 0.6
    assert binary_detection_metrics(probs, labels, threshold=0.6)["precision"] == pytest.approx(1.0)


def test_binary_detection_metrics_single_class_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_detection_metrics(torch.tensor([0.2, 0.7, 0.9]), torch.tensor([1, 1, 1]))
    assert math.isnan(m["auc"]) and math.isnan(m["eer"]) and math.isnan(m["ap"])
    assert m["acc"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert (m["n_fake"], m["n_real"]) == (3, 0)


def test_binary_detection_metrics_rejects_logits() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        binary_detection_metrics(torch.tensor([-2.0, 3.0]), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------------------------------------------
# Video aggregation
# ----------------------------------------------------------------------------------------------------------------

PROBS = torch.tensor([0.2, 0.4, 0.9, 0.6, 0.7, 0.1])
LABELS = torch.tensor([0, 0, 0, 1, 1, 0])
VIDEOS = torch.tensor([5, 5, 5, 2, 2, 9])


@pytest.mark.parametrize(("how", "expected"), [
    ("mean", [0.65, 0.5, 0.1]),
    ("max", [0.7, 0.9, 0.1]),
    ("vote", [1.0, 1 / 3, 0.0]),
])
def test_aggregate_by_video(how: str, expected: list[float]) -> None:
    vp, vl, ids = aggregate_by_video(PROBS, LABELS, VIDEOS, how=how)
    assert ids.tolist() == [2, 5, 9]
    assert vl.tolist() == [1, 0, 0] and vl.dtype == torch.int64
    assert vp.dtype == torch.float32
    assert vp.tolist() == pytest.approx(expected)


def test_aggregate_errors() -> None:
    with pytest.raises(ValueError, match="video index 5"):
        aggregate_by_video(PROBS, torch.tensor([0, 1, 0, 1, 1, 0]), VIDEOS)
    with pytest.raises(ValueError, match="median"):
        aggregate_by_video(PROBS, LABELS, VIDEOS, how="median")


# ----------------------------------------------------------------------------------------------------------------
# DetectionScores + report
# ----------------------------------------------------------------------------------------------------------------

GROUPS = ["original", "Deepfakes", "Face2Face"]


def _scores() -> dict[str, torch.Tensor]:
    """3 real videos, 2 Deepfakes videos scored high (easy), 2 Face2Face videos scored lower than the reals."""
    probs = torch.tensor([0.30, 0.40, 0.35, 0.45, 0.20, 0.25,   # real videos 0, 1, 2
                          0.90, 0.80, 0.95, 0.85,               # Deepfakes videos 10, 11
                          0.10, 0.15, 0.05, 0.12])              # Face2Face videos 20, 21
    labels = torch.tensor([0] * 6 + [1] * 8)
    video = torch.tensor([0, 0, 1, 1, 2, 2, 10, 10, 11, 11, 20, 20, 21, 21])
    group = torch.tensor([0] * 6 + [1] * 4 + [2] * 4)
    return {"probs": probs, "labels": labels, "video_idx": video, "group_idx": group}


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")  # compute before update, on purpose
def test_detection_scores_accumulates_across_updates() -> None:
    s = _scores()
    metric = DetectionScores()
    empty = metric.compute()
    assert all(v.numel() == 0 for v in empty.values())
    assert empty["probs"].dtype == torch.float32 and empty["labels"].dtype == torch.int64
    for sl in (slice(0, 5), slice(5, 9), slice(9, 14)):
        metric.update(s["probs"][sl], s["labels"][sl], s["video_idx"][sl], s["group_idx"][sl])
    out = metric.compute()
    for key, value in s.items():
        assert torch.equal(out[key], value.to(out[key].dtype)), key
    assert out["video_idx"].dtype == torch.int64 and out["group_idx"].dtype == torch.int64
    metric.reset()
    assert metric.compute()["probs"].numel() == 0


def test_detection_report_per_method_selects_method_fakes_and_all_reals() -> None:
    report = detection_report(_scores(), group_names=GROUPS)
    json.dumps(report)
    assert set(report) == {"frame", "video", "per_method", "baseline"}
    assert set(report["per_method"]) == {"Deepfakes", "Face2Face"}  # no entry for the real group
    assert report["frame"]["n"] == 14 and report["video"]["n"] == 7
    df, f2f = report["per_method"]["Deepfakes"], report["per_method"]["Face2Face"]
    assert (df["frame"]["n_real"], df["frame"]["n_fake"]) == (6, 4)
    assert (df["video"]["n_real"], df["video"]["n_fake"]) == (3, 2)
    assert df["frame"]["auc"] == pytest.approx(1.0) and df["video"]["eer"] == pytest.approx(0.0, abs=1e-7)
    assert f2f["frame"]["auc"] == pytest.approx(0.0) and f2f["frame"]["recall"] == 0.0
    # overall: half the fakes perfectly above the reals, half below
    assert report["frame"]["auc"] == pytest.approx(0.5)


def test_the_trivial_baseline_is_the_best_constant_predictor() -> None:
    labels = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0])  # 5 of 8 frames fake
    video = torch.tensor([0, 0, 1, 2, 3, 3, 4, 4])  # videos: fake, fake, real, fake, real
    base = detection_report({"probs": torch.rand(8), "labels": labels, "video_idx": video})["baseline"]
    assert base["frame"]["auc"] == pytest.approx(0.5) and base["frame"]["acc"] == pytest.approx(5 / 8)
    assert base["frame"]["ap"] == pytest.approx(5 / 8) and base["frame"]["recall"] == 1.0
    assert base["video"]["acc"] == pytest.approx(3 / 5) and base["video"]["n"] == 5
    mostly_real = constant_baseline(1 - labels, video)
    assert mostly_real["frame"]["acc"] == pytest.approx(5 / 8) and mostly_real["frame"]["recall"] == 0.0
    # fake videos with many frames, real ones with few: the frame majority (fake) is not the video majority (real)
    labels = torch.tensor([1] * 30 + [0] * 5)
    video = torch.tensor([i // 10 for i in range(30)] + [3, 4, 5, 6, 7])
    base = constant_baseline(labels, video)
    assert base["frame"]["acc"] == pytest.approx(30 / 35) and base["frame"]["recall"] == 1.0
    assert base["video"]["acc"] == pytest.approx(5 / 8) and base["video"]["recall"] == 0.0  # "always real"
    # a constant of certainty 1 is "fake" whatever the detector's threshold
    assert constant_baseline(torch.tensor([1, 1, 1, 0]), torch.arange(4), threshold=1.0)["frame"]["acc"] == 0.75


def test_detection_report_without_groups_or_single_method() -> None:
    s = _scores()
    assert detection_report(s)["per_method"] == {}
    keep = s["group_idx"] != 2
    only_df = {k: v[keep] for k, v in s.items()}
    assert detection_report(only_df, group_names=GROUPS)["per_method"] == {}
    with pytest.raises(ValueError, match="group_idx"):
        detection_report(s, group_names=GROUPS[:2])


def test_detection_report_video_aggregation_vote() -> None:
    s = _scores()
    s["probs"] = torch.tensor([0.6, 0.4, 0.35, 0.45, 0.20, 0.25, 0.9, 0.8, 0.95, 0.85, 0.1, 0.15, 0.05, 0.12])
    rep = detection_report(s, video_aggregation="vote")
    # video 0 has one of two frames above 0.5 -> vote 0.5, not > 0.5 -> predicted real, so only F2F videos are wrong
    assert rep["video"]["acc"] == pytest.approx(5 / 7)
    assert rep["frame"]["acc"] == pytest.approx(9 / 14)


# ----------------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------------


def _check_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 5_000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no leftover temporary file


def test_plots_write_valid_png(tmp_path: Path) -> None:
    s = _scores()
    cm = save_confusion_matrix_png(s["probs"], s["labels"], tmp_path / "plots" / "cm.png", title="test")
    roc = save_roc_curve_png(s["probs"], s["labels"], tmp_path / "plots" / "roc.png", title="test")
    _check_png(cm)
    _check_png(roc)
    # a single class must not crash either
    one = torch.ones(4, dtype=torch.long)
    _check_png(save_roc_curve_png(torch.rand(4), one, tmp_path / "single" / "roc.png"))
    _check_png(save_confusion_matrix_png(torch.rand(4), one, tmp_path / "single" / "cm.png"))
