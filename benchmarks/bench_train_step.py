"""Training-step throughput (images/s) and GPU utilisation for Meso-4 and VRN: fp32 against bf16 autocast and
channels_last, measured side by side in one process.

Each case runs full optimisation steps (forward, loss, backward, optimiser step) on one batch kept on the device,
so the numbers are what the model can take, not what a loader gives; ``--loader`` also measures how many images
per second the project's face loader (``FaceDataModule`` on the embedded synthetic data, crop cache, the training
augmentation) delivers with each ``num_workers``, which says which loader settings keep that GPU busy. While a
case is timed, the GPU's utilisation is sampled every 50 ms through NVML (``nvidia-ml-py``) where it is installed.

Models (the shapes the configs train):

* ``meso4``: Meso-4 (Afchar et al. 2018) at 256 x 256, BCE on the fake logit, Adam;
* ``vrn_small``: the embedded-data VRN (64 px in, 64 x 64 x 64 volume, 1 stack of 64 features), RMSProp;
* ``vrn``: the paper's VRN (Jackson et al. 2017: 192 px in, 200 x 192 x 192 volume, 2 stacks of 256 features).

Run::

    .venv/bin/python benchmarks/bench_train_step.py --device cpu --models meso4,vrn_small --steps 5
    python benchmarks/bench_train_step.py --device cuda --steps 30 --loader --json /tmp/bench_train_step.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceforge.losses.volumetric import volumetric_bce_loss  # noqa: E402
from faceforge.models.meso import Meso4  # noqa: E402
from faceforge.models.vrn import VRN  # noqa: E402

BATCH = {"meso4": 256, "vrn_small": 64, "vrn": 8}


class GpuSampler:
    """Samples the GPU's utilisation (percent) every ``period`` seconds in a thread, through NVML."""

    def __init__(self, index: int = 0, period: float = 0.05) -> None:
        self.samples: list[int] = []
        self.period = period
        self._stop = threading.Event()
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # no NVML (CPU run, or the package is absent): utilisation is not reported
            self._handle = None

    def __enter__(self) -> GpuSampler:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            time.sleep(self.period)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        """Mean utilisation in percent, or None where NVML is absent."""
        return statistics.fmean(self.samples) if self.samples else None


def build(name: str, device: torch.device, batch: int) -> tuple[torch.nn.Module, Any, Any, torch.optim.Optimizer]:
    """Network, a batch of inputs, its targets and the optimiser of one benchmark model."""
    if name == "meso4":
        net = Meso4()
        images = torch.rand(batch, 3, 256, 256, device=device)
        target = (torch.rand(batch, device=device) > 0.5).float()
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    elif name == "vrn_small":
        net = VRN(num_stacks=1, features=64, depth=2, out_depth=64, output_size=64, stem_channels=(16, 32))
        images = torch.rand(batch, 3, 64, 64, device=device)
        target = (torch.rand(batch, 64, 64, 64, device=device) > 0.5).float()
        opt = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    elif name == "vrn":
        net = VRN()
        images = torch.rand(batch, 3, 192, 192, device=device)
        target = (torch.rand(batch, 200, 192, 192, device=device) > 0.5).float()
        opt = torch.optim.RMSprop(net.parameters(), lr=1e-4)
    else:
        raise SystemExit(f"unknown model {name!r}: meso4, vrn_small or vrn")
    return net.to(device), images, target, opt


def step(name: str, net: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, opt: torch.optim.Optimizer,
         bf16: bool) -> None:
    """One optimisation step: forward (under bf16 autocast if asked), loss in fp32, backward, step."""
    ctx = torch.autocast(images.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with ctx:
        out = net(images)
    if name == "meso4":
        loss = F.binary_cross_entropy_with_logits(out.float().reshape(-1), target)
    else:
        loss = volumetric_bce_loss(out.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name: str, device: torch.device, batch: int, steps: int, warmup: int) -> list[dict[str, Any]]:
    """Images/s of the four precision / memory-format cases of one model, fp32 NCHW first (the reference)."""
    rows = []
    for label, bf16, channels_last in (("fp32", False, False), ("fp32 channels_last", False, True),
                                       ("bf16 autocast", True, False), ("bf16 autocast + channels_last", True, True)):
        torch.manual_seed(0)
        net, images, target, opt = build(name, device, batch)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        for _ in range(warmup):
            step(name, net, images, target, opt, bf16)
        sync(device)
        with GpuSampler(device.index or 0) as gpu:
            t0 = time.perf_counter()
            for _ in range(steps):
                step(name, net, images, target, opt, bf16)
            sync(device)
            seconds = time.perf_counter() - t0
        rows.append({"model": name, "case": label, "batch": batch, "steps": steps, "seconds": seconds,
                     "images_per_s": batch * steps / seconds, "gpu_util_pct": gpu.mean})
        del net, images, target, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ref = rows[0]["images_per_s"]
    for r in rows:
        r["speedup_vs_fp32"] = r["images_per_s"] / ref
    return rows


def bench_loader(workers: list[int], epochs: int, batch: int) -> list[dict[str, Any]]:
    """Images/s the training face loader delivers (embedded synthetic data, crop cache, augmentation) per
    ``num_workers``; the first epoch (which builds the crop cache) is not timed."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    rows = []
    conf_dir = str(Path(__file__).resolve().parents[1] / "conf")
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(conf_dir, version_base="1.3"):
        for n in workers:
            cfg = compose("train", overrides=["data=synthetic", f"paths.data_dir={tmp}", f"data.num_workers={n}",
                                              f"data.batch_size={batch}", "data.builder.num_videos=64",
                                              "data.builder.frames_per_video=16",
                                              f"data.pin_memory={torch.cuda.is_available()}"])
            dm = instantiate(cfg.data, _convert_="object")
            dm.prepare_data()
            dm.setup("fit")
            loader = dm.train_dataloader()
            for _ in loader:  # warm-up epoch: workers start, cache built
                pass
            t0, count = time.perf_counter(), 0
            for _ in range(epochs):
                for batch_ in loader:
                    count += int(batch_["image"].shape[0])
            seconds = time.perf_counter() - t0
            rows.append({"num_workers": n, "images": count, "seconds": seconds, "images_per_s": count / seconds})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="meso4,vrn_small,vrn")
    ap.add_argument("--batch", default=None, help="model=batch pairs, e.g. meso4=128,vrn=4 (defaults: %s)" % BATCH)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--loader", action="store_true", help="also measure the face loader per num_workers")
    ap.add_argument("--loader-workers", default="0,2,4,8")
    ap.add_argument("--loader-epochs", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    a = ap.parse_args()
    device = torch.device(a.device)
    batches = dict(BATCH)
    for pair in (a.batch.split(",") if a.batch else []):
        key, value = pair.split("=")
        batches[key] = int(value)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "steps": [], "loader": []}
    print(f"device: {result['device']}, torch {torch.__version__}")
    print(f"{'model':<10} {'case':<31} {'batch':>5} {'images/s':>10} {'vs fp32':>8} {'GPU util %':>10}")
    for name in a.models.split(","):
        for r in bench_model(name, device, batches[name], a.steps, a.warmup):
            result["steps"].append(r)
            util = "-" if r["gpu_util_pct"] is None else f"{r['gpu_util_pct']:.0f}"
            print(f"{r['model']:<10} {r['case']:<31} {r['batch']:>5} {r['images_per_s']:>10.1f} "
                  f"{r['speedup_vs_fp32']:>7.2f}x {util:>10}", flush=True)
    if a.loader:
        print(f"\n{'loader num_workers':<20} {'images/s':>10}")
        for r in bench_loader([int(w) for w in a.loader_workers.split(",")], a.loader_epochs, batches["meso4"]):
            result["loader"].append(r)
            print(f"{r['num_workers']:<20} {r['images_per_s']:>10.1f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
