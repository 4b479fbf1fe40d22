"""Throughput of the ResNeXt-LSTM video detector at the reference project's size, precision and layout side by side.

Reference size: ResNeXt-50 32x4d backbone, LSTM hidden 2048, 112x112 face crops, clips of T = 10 frames, batch 2-4
(the reference trained with batch 4, T = 10). For every case the table gives seconds per iteration (median of
``--repeats`` after ``--warmup`` untimed ones; the minimum too, steadier on a shared machine), clips/s and frames/s
(from the median):

* ``train``: forward + BCE-with-logits + backward (gradients zeroed after each; no optimizer step), model in train
  mode; ``train frozen``: the same with ``freeze_backbone=True`` (backward reaches only the LSTM and the head);
* ``infer``: forward only, eval mode, ``torch.inference_mode``;
* ``backbone only``: the backbone alone (torchvision's ResNeXt-50 without fc) on the ``B * T`` frames (fwd + bwd
  of the pooled features' sum), the reference point that shows what the LSTM and the rest of the model add;
* precisions/layouts: fp32 NCHW, fp32 ``channels_last``, bf16 autocast, bf16 autocast + ``channels_last``; on CUDA
  also TF32 and fp16 autocast, both ``channels_last`` (the fp32 rows turn TF32 off for matmuls and convolutions, so
  they are true fp32). ``channels_last`` converts the conv weights; the frames the model builds inside then run
  through the convs in that layout.

Weights are random (nothing is downloaded): speed does not depend on them. Inputs are random [0, 1] clips.

Run (CPU, then a GPU where one exists; prints a table and, with ``--out``, writes JSON)::

    .venv/bin/python benchmarks/bench_resnext_lstm.py --device cpu --batch 2 --frames 10 --repeats 3 \\
        --out /tmp/bench_resnext_lstm_cpu.json
    .venv/bin/python benchmarks/bench_resnext_lstm.py --device cuda --batch 4 --frames 10 --repeats 20 \\
        --out /tmp/bench_resnext_lstm_cuda.json

``--quick`` runs only fp32 and bf16 train/infer (no channels_last, no frozen, no backbone-only rows).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
import torchvision

from faceforge.models.resnext_lstm import IMAGENET_MEAN, IMAGENET_STD, ResNeXtLSTM, build_backbone
from faceforge.utils.atomic import atomic_write_json


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (``repeats`` timed calls after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _precisions(device: torch.device, quick: bool) -> list[tuple[str, torch.dtype | None, bool, bool]]:
    """(label, autocast dtype or None, channels_last, TF32 allowed) of each precision/layout case."""
    cases: list[tuple[str, torch.dtype | None, bool, bool]] = [
        ("fp32", None, False, False), ("bf16 autocast", torch.bfloat16, False, False)]
    if not quick:
        cases += [("fp32 channels_last", None, True, False),
                  ("bf16 autocast channels_last", torch.bfloat16, True, False)]
        if device.type == "cuda":
            cases += [("tf32 channels_last", None, True, True),
                      ("fp16 autocast channels_last", torch.float16, True, False)]
    return cases


def _model(args: argparse.Namespace, device: torch.device, channels_last: bool, **kwargs: Any) -> ResNeXtLSTM:
    torch.manual_seed(0)
    model = ResNeXtLSTM(args.backbone, hidden_size=args.hidden, **kwargs).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def run_case(args: argparse.Namespace, device: torch.device, mode: str, label: str, dtype: torch.dtype | None,
             channels_last: bool) -> dict[str, Any]:
    """Time one case; returns a result row (seconds list, median, clips/s, frames/s, peak CUDA memory)."""
    g = torch.Generator().manual_seed(0)
    clips = torch.rand(args.batch, args.frames, 3, args.size, args.size, generator=g).to(device)
    labels = (torch.arange(args.batch) % 2).float().to(device)

    if mode == "backbone only":
        torch.manual_seed(0)
        net = build_backbone(args.backbone)[0].to(device).train()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        frames = (clips.flatten(0, 1) - mean) / std

        def step() -> None:
            with _autocast(device, dtype):
                out = net(frames).float().sum()
            out.backward()
            net.zero_grad(set_to_none=True)
    elif mode == "infer":
        model = _model(args, device, channels_last).eval()

        def step() -> None:
            with torch.inference_mode(), _autocast(device, dtype):
                model(clips)
    else:
        model = _model(args, device, channels_last, freeze_backbone=(mode == "train frozen")).train()

        def step() -> None:
            with _autocast(device, dtype):
                loss = F.binary_cross_entropy_with_logits(model(clips), labels)
            loss.backward()
            model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = _time(step, device, args.warmup, args.repeats)
    median = statistics.median(times)
    row: dict[str, Any] = {
        "device": device.type, "mode": mode, "precision": label, "seconds": times, "median_s": median,
        "min_s": min(times),
        "clips_per_s": args.batch / median, "frames_per_s": args.batch * args.frames / median,
    }
    if device.type == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def main() -> None:
    """Parse arguments, run every case on the chosen devices, print the table, optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="all = cpu, and cuda where available")
    p.add_argument("--backbone", default="resnext50_32x4d")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default="train,train frozen,infer,backbone only",
                   help="comma-separated subset of: train, train frozen, infer, backbone only")
    p.add_argument("--quick", action="store_true", help="fp32 and bf16 train/infer only")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()

    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
            torch.backends.cudnn.benchmark = True
        elif args.device == "cuda":
            raise SystemExit("--device cuda: CUDA is not available")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.quick:
        modes = [m for m in modes if m in ("train", "infer")]

    rows = []
    header = (f"{'device':6} {'mode':14} {'precision':28} {'s/iter':>8} {'min s':>7} {'clips/s':>8} {'frames/s':>9} "
              f"{'peak MiB':>9}")
    print(f"backbone={args.backbone} hidden={args.hidden} batch={args.batch} T={args.frames} "
          f"size={args.size} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(header)
    for device in devices:
        for mode in modes:
            for label, dtype, channels_last, tf32 in _precisions(device, args.quick):
                torch.backends.cuda.matmul.allow_tf32 = tf32  # fp32 rows are true fp32 (no TF32) on CUDA
                torch.backends.cudnn.allow_tf32 = tf32
                row = run_case(args, device, mode, label, dtype, channels_last)
                rows.append(row)
                peak = f"{row['peak_mib']:9.0f}" if "peak_mib" in row else f"{'-':>9}"
                print(f"{row['device']:6} {mode:14} {label:28} {row['median_s']:8.3f} {row['min_s']:7.3f} "
                      f"{row['clips_per_s']:8.2f} {row['frames_per_s']:9.1f} {peak}", flush=True)
    if args.out:
        atomic_write_json(args.out, {
            "benchmark": "resnext_lstm", "args": vars(args), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor(), "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "results": rows,
        })
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
