"""Activation checkpointing: the memory one training step saves and the time it costs, level by level (CPU).

    python benchmarks/checkpointing.py              # modern 256² batch 2, 5 timed rounds (a few minutes)
    python benchmarks/checkpointing.py --quick      # 2 timed rounds, no fresh processes
    python benchmarks/checkpointing.py --case 3d    # a 3D nnU-Net-like network instead

For each setting (no checkpointing, the top level, the two top levels, every level;
``unetgen.network.recompute.checkpoint_levels``) on the same weights:

* **estimate** — ``unetgen.estimate(plan, batch, training=True, checkpoint=...)``, the step's peak;
* **live tensors** — the peak of tensor bytes alive at once in one real step, measured by ``LiveBytes``
  (which sums gradients out of place: compared with the replay as metered, in the next column);
* **resident** — in a fresh process (``MALLOC_MMAP_THRESHOLD_=1MiB``, so freed blocks go back at once), the peak
  resident memory one step adds after two warm-up steps;
* **time** — one warm-up step each, then rounds in which every setting runs one step, in an order that rotates
  every round; the median (min–max) of the rounds, as wall time and as the process's CPU time (user + system,
  both threads), which other processes on a shared machine disturb much less than the wall time.

Prints the machine and a Markdown table (the one in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_status import status as _status  # noqa: E402

import unetgen  # noqa: E402
from training_memory import machine  # noqa: E402
from unetgen.network.measure import make_optimizer, random_targets, training_step, training_step_peak  # noqa: E402
from unetgen.network.recompute import checkpoint_levels  # noqa: E402
from unetgen.planning.training import training_memory  # noqa: E402

CASES = {
    "2d": (unetgen.preset("modern"), (256, 256), 2),
    "3d": (unetgen.UNetSpec(spatial_dims=3, width=16, depth=4, max_channels=128, padding="same", norm="instance",
                            activation="leaky_relu", conv_bias=True, downsampling="conv", decoder_convs=2),
           (32, 96, 96), 2),
}
SETTINGS = {"none": None, "level 0": [0], "levels 0, 1": [0, 1], "every level": "levels"}


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f}"




def _model(case: str, levels: object) -> tuple[torch.nn.Module, torch.Tensor, list[torch.Tensor]]:
    spec, size, batch = CASES[case]
    model = unetgen.build(spec, size, seed=0).train()
    if levels is not None:
        checkpoint_levels(model, levels)  # type: ignore[arg-type]
    torch.manual_seed(0)
    x = torch.randn(batch, spec.in_channels, *size)
    return model, x, random_targets(model, x)


def rss_child(job: dict[str, object]) -> dict[str, int]:
    """In a fresh process: two warm-up steps, then the resident memory one step adds at its peak."""
    torch.set_num_threads(int(job["threads"]))  # type: ignore[arg-type]
    model, x, targets = _model(str(job["case"]), job["levels"])
    optimizer = make_optimizer("sgd", model.parameters())
    for _ in range(2):
        training_step(model, x, targets, optimizer)
    optimizer.zero_grad(set_to_none=True)
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    training_step(model, x, targets, optimizer)
    return {"added": _status("VmHWM") - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="2d")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 rounds, no fresh processes")
    parser.add_argument("--no-rss", action="store_true", help="no fresh processes (time and live tensors only)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(json.loads(args.rss_child))))
        return
    torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else args.rounds
    spec, size, batch = CASES[args.case]
    plan = unetgen.make_plan(spec, size)
    print(machine())
    print(f"{spec.name} {'×'.join(map(str, size))}, batch {batch}, SGD, fp32, {args.threads} threads, {rounds} rounds")
    runs = {}
    for label, levels in SETTINGS.items():
        model, x, targets = _model(args.case, levels)
        optimizer = make_optimizer("sgd", model.parameters())
        runs[label] = (model, x, targets, optimizer)
        training_step(model, x, targets, optimizer)  # warm-up (kernels, optimizer state)
    times: dict[str, list[float]] = {label: [] for label in SETTINGS}
    cpu: dict[str, list[float]] = {label: [] for label in SETTINGS}
    order = list(SETTINGS)
    for round_ in range(rounds):
        for label in order[round_ % len(order):] + order[: round_ % len(order)]:
            model, x, targets, optimizer = runs[label]
            start, start_cpu = time.perf_counter(), time.process_time()
            training_step(model, x, targets, optimizer)
            times[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - start_cpu)
    lines = [
        "| checkpointed | estimate: step peak (MiB) | saved vs none | live tensors, measured (MiB) | replay as metered "
        "/ measured | estimate less weights, state, batch (MiB) | resident memory the step adds (MiB) | step time: "
        "median (min–max) | × none | CPU time per step: median (min–max) | × none |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_estimate = training_memory(plan, batch, device="cpu").peak_bytes
    base_time = statistics.median(times["none"])
    base_cpu = statistics.median(cpu["none"])
    for label, levels in SETTINGS.items():
        model, x, targets, _ = runs[label]
        measured = training_step_peak(model, x, targets, "sgd")
        memory = training_memory(plan, batch, device="cpu", checkpoint=levels)
        estimate = memory.peak_bytes
        own = estimate - memory.parameter_bytes - memory.optimizer_bytes - memory.input_bytes
        metered = training_memory(plan, batch, device="cpu", checkpoint=levels, metered=True).peak_bytes
        resident = "—"
        if not (args.quick or args.no_rss):
            job = {"case": args.case, "levels": levels, "threads": args.threads}
            done = subprocess.run([sys.executable, __file__, "--rss-child", json.dumps(job)], capture_output=True,
                                  text=True, check=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)})
            resident = _mib(json.loads(done.stdout.strip().splitlines()[-1])["added"])
        median = statistics.median(times[label])
        lines.append(
            f"| {label} | {_mib(estimate)} | {1 - estimate / base_estimate:.0%} | {_mib(measured)} | "
            f"{metered / measured:.4f} | {_mib(own)} | {resident} | {median:.2f} s ({min(times[label]):.2f}–{max(times[label]):.2f}) "
            f"| {median / base_time:.2f} | {statistics.median(cpu[label]):.2f} s ({min(cpu[label]):.2f}–"
            f"{max(cpu[label]):.2f}) | {statistics.median(cpu[label]) / base_cpu:.2f} |"
        )
        print(lines[-1], flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
