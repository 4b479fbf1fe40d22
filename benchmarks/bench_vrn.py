"""VRN forward + backward time per sample at the paper size, fp32 against bf16 autocast and channels_last.

Paper size (Jackson et al., ICCV 2017; the released model): 192x192 RGB input, 2 stacked hourglasses of 256
features, 200x192x192 output volume, per-voxel sigmoid cross-entropy. Every case runs forward + loss + backward on
the same random batch in the same process (gradients zeroed each time, no optimizer step); the table gives seconds
per sample (median of ``--repeats`` after one untimed warm-up, and the minimum, steadier on a shared machine) and
the speed ratio to the fp32 NCHW reference measured in the same run. ``--model guided`` times VRN-Guided (a
2-stack landmark hourglass + the VRN on RGB + 68 heatmaps) instead.

Run::

    .venv/bin/python benchmarks/bench_vrn.py --device cpu --batch 1 --repeats 3
    .venv/bin/python benchmarks/bench_vrn.py --device cuda --batch 8 --repeats 20   # where a GPU exists
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch

from faceforge.losses.volumetric import volumetric_bce_loss
from faceforge.models.hourglass import StackedHourglass
from faceforge.models.vrn import VRN, VRNGuided


def build(model: str) -> torch.nn.Module:
    """The paper-size VRN (or VRN-Guided)."""
    if model == "vrn":
        return VRN()
    return VRNGuided(StackedHourglass(num_stacks=2, features=256, depth=4, num_points=68, in_channels=3),
                     VRN(in_channels=3 + 68))


def step(net: torch.nn.Module, images: torch.Tensor, target: torch.Tensor, bf16: bool) -> None:
    """Forward, volumetric BCE, backward."""
    ctx = torch.autocast(images.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with ctx:
        out = net(images)
        volume = out.volume if hasattr(out, "volume") else out
    loss = volumetric_bce_loss(volume.float(), target)
    loss.backward()
    net.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=("vrn", "guided"), default="vrn")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, 192, 192, device=device)
    target = (torch.rand(args.batch, 200, 192, 192, device=device) > 0.5).float()
    cases = [("fp32", False, False), ("fp32 channels_last", False, True), ("bf16 autocast", True, False),
             ("bf16 autocast + channels_last", True, True)]
    print(f"{args.model} paper size, batch {args.batch}, device {device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print("| case | s/sample (median) | s/sample (min) | speed vs fp32 |")
    print("|---|---|---|---|")
    reference = None
    for name, bf16, channels_last in cases:
        net = build(args.model).to(device).train()
        x = images
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        step(net, x, target, bf16)  # warm-up
        times = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step(net, x, target, bf16)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / args.batch)
        med = statistics.median(times)
        reference = reference or med
        print(f"| {name} | {med:.3f} | {min(times):.3f} | {reference / med:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
