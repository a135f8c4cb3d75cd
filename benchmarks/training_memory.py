"""Training-step memory: unetgen's replay (``unetgen.estimate(plan, batch, training=True, ...)``) against what real
steps hold, on the CPU.

    python benchmarks/training_memory.py                 # the table, then resident memory (a few minutes)
    python benchmarks/training_memory.py --table         # the table only
    python benchmarks/training_memory.py --rss --repeats 3

**The table.** Each row runs a real step (forward in training mode, cross-entropy, backward, optimizer step; the
second step, so the optimizer's state exists and the gradients start as None) under ``LiveBytes``, the dispatch
mode that counts the bytes of tensor storages alive at once, and compares its peak with the replay. The presets run
on the meta device at their full size (no memory, no FLOPs), the variants on the CPU at small sizes. While a
dispatch mode is active autograd sums two gradients of one tensor into a new tensor instead of in place; the replay
is compared as the meter runs (``metered=True``), and the estimate for a run without the meter is shown beside it.

**Resident memory.** One mid-size case in fresh processes: two warm-up steps (optimizer state, oneDNN's kernels),
then the peak resident memory (``VmHWM`` after ``/proc/self/clear_refs``) of one step less the memory before it
(libraries, weights, optimizer state, the batch): what the step itself touched, against the estimate's step peak
less the same parts. Measured both with glibc's defaults and with ``MALLOC_MMAP_THRESHOLD_=1MiB`` (freed blocks of
1 MiB or more go back to the system at once, so the peak is what was alive).

Prints Markdown tables (the ones in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import unetgen
from unetgen.network.measure import make_optimizer, random_targets, training_step, training_step_peak
from unetgen.network.recompute import checkpoint_levels
from unetgen.planning.training import training_memory
from unetgen.planning.budget import budgeted_bytes
from unetgen.planning.cost import estimate
from proc_status import status as _status

U = unetgen.UNetSpec

#: (label, spec, size or None for the preset's, batch, device, optimizer, precision, checkpointed levels)
CASES: list[tuple[str, U, tuple[int, ...] | None, int, str, str | None, str, Any]] = [
    ("paper (preset)", unetgen.preset("paper"), None, 2, "meta", "sgd", "fp32", None),
    ("modern (preset)", unetgen.preset("modern"), None, 2, "meta", "sgd", "fp32", None),
    ("cicek3d (preset)", unetgen.preset("cicek3d"), None, 2, "meta", "sgd", "fp32", None),
    ("nnunet (preset)", unetgen.preset("nnunet"), None, 2, "meta", "sgd", "fp32", None),
    ("nnunet (preset), Adam", unetgen.preset("nnunet"), None, 2, "meta", "adam", "fp32", None),
    ("valid, no norm (paper-like)", U(width=8, depth=4), (188, 188), 2, "cpu", "sgd", "fp32", None),
    ("same, batch norm, output same", U(width=8, depth=4, padding="same", norm="batch", output="same"), (96, 80), 2,
     "cpu", "sgd", "fp32", None),
    ("upsample + conv (nearest)", U(width=8, depth=4, upsampling="upsample_conv"), (188, 188), 2, "cpu", "sgd",
     "fp32", None),
    ("linear upsample, reflect padding", U(width=8, depth=4, upsampling="upsample_conv", interpolation="linear",
                                           padding="same", padding_mode="reflect"), (64, 64), 2, "cpu", "sgd",
     "fp32", None),
    ("circular padding", U(width=8, depth=4, padding="same", padding_mode="circular"), (64, 64), 2, "cpu", "sgd",
     "fp32", None),
    ("instance norm, leaky ReLU", U(width=8, depth=4, norm="instance", activation="leaky_relu"), (188, 188), 2,
     "cpu", "sgd", "fp32", None),
    ("group norm, ELU", U(width=8, depth=4, norm="group", norm_groups=4, activation="elu"), (188, 188), 2, "cpu",
     "sgd", "fp32", None),
    ("layer norm, GELU", U(width=8, depth=4, norm="layer", activation="gelu"), (188, 188), 2, "cpu", "sgd", "fp32",
     None),
    ("PReLU", U(width=8, depth=4, activation="prelu"), (188, 188), 2, "cpu", "sgd", "fp32", None),
    ("residual, SiLU, instance norm", U(width=8, depth=4, block="residual", padding="same", norm="instance",
                                        activation="silu"), (64, 64), 2, "cpu", "sgd", "fp32", None),
    ("dropout every level, softmax", U(width=8, depth=4, dropout=0.3, dropout_at="every_level",
                                       final_activation="softmax"), (188, 188), 2, "cpu", "sgd", "fp32", None),
    ("1D, PReLU, output same", U(spatial_dims=1, depth=3, width=8, pool_sizes=[3, 2], kernel_sizes=[5, 3, 1],
                                 activation="prelu", output="same"), (1000,), 2, "cpu", "sgd", "fp32", None),
    ("3D, batch norm", U(spatial_dims=3, depth=3, channels=[[4, 8], [8, 16], [16, 32]], up_channels="keep",
                         norm="batch"), (44, 44, 44), 2, "cpu", "sgd", "fp32", None),
    ("strided conv (nnU-Net plain)", U(width=8, depth=4, downsampling="conv", padding="same", norm="instance",
                                       conv_bias=True, activation="leaky_relu", decoder_convs=1), (64, 64), 2, "cpu",
     "sgd", "fp32", None),
    ("average pooling", U(width=8, depth=4, downsampling="avgpool"), (188, 188), 2, "cpu", "sgd", "fp32", None),
    ("ResEnc + deep supervision", U(width=8, depth=4, downsampling="conv", padding="same",
                                    encoder_blocks=[1, 2, 2, 3], decoder_convs=1, norm="instance",
                                    activation="leaky_relu", deep_supervision=2), (64, 64), 2, "cpu", "sgd", "fp32",
     None),
    ("3D ResEnc, anisotropic", U(spatial_dims=3, width=4, depth=3, downsampling="conv", padding="same",
                                 encoder_blocks=[2, 1, 2], pool_sizes=[[1, 2, 2], 2], kernel_sizes=[[1, 3, 3], 3, 3],
                                 norm="batch"), (16, 48, 48), 2, "cpu", "sgd", "fp32", None),
    ("attention gates", U(width=8, depth=4, skip_gate="attention", norm="batch"), (188, 188), 2, "cpu", "sgd",
     "fp32", None),
    ("UNet++ (nested skips)", U(width=8, depth=4, skips="nested", padding="same", norm="instance"), (64, 64), 2,
     "cpu", "sgd", "fp32", None),
    ("same, batch norm: Adam", U(width=8, depth=4, padding="same", norm="batch"), (64, 64), 2, "cpu", "adam",
     "fp32", None),
    ("same, batch norm: AdamW", U(width=8, depth=4, padding="same", norm="batch"), (64, 64), 2, "cpu", "adamw",
     "fp32", None),
    ("same, batch norm: no optimizer", U(width=8, depth=4, padding="same", norm="batch"), (64, 64), 2, "cpu", None,
     "fp32", None),
    ("group norm, reflect: bf16 autocast", U(width=8, depth=4, norm="group", norm_groups=4, padding="same",
                                              padding_mode="reflect", upsampling="upsample_conv"), (64, 64), 2,
     "cpu", "sgd", "bf16", None),
    ("3D instance norm, PReLU: fp16 autocast", U(spatial_dims=3, width=4, depth=3, norm="instance", padding="same",
                                                 activation="prelu"), (24, 24, 24), 2, "cpu", "sgd", "fp16", None),
    ("same, batch norm: checkpoint every level", U(width=8, depth=4, padding="same", norm="batch"), (64, 64), 2,
     "cpu", "sgd", "fp32", "levels"),
    ("ResEnc + DS: checkpoint level 0", U(width=8, depth=4, downsampling="conv", padding="same",
                                         encoder_blocks=[1, 2, 2, 3], decoder_convs=1, norm="instance",
                                         activation="leaky_relu", deep_supervision=2), (64, 64), 2, "cpu", "sgd",
     "fp32", [0]),
]


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.2f}"


def table() -> list[str]:
    """One row per case: the replay against the live tensors of a real step."""
    lines = [
        "| case | input × batch | optimizer | precision | replay as metered (MiB) | live tensors, measured (MiB) | "
        "replay / measured | estimate without the meter (MiB) | peak in |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, spec, size, batch, device, optimizer, precision, levels in CASES:
        plan = unetgen.make_plan(spec, size)
        with torch.device(device):
            model = unetgen.build(spec, plan.input_size, seed=0 if device == "cpu" else None)
            x = torch.randn(batch, spec.in_channels, *plan.input_size) if device == "cpu" else torch.empty(
                batch, spec.in_channels, *plan.input_size)
        if levels is not None:
            checkpoint_levels(model, levels)
        measured = training_step_peak(model, x, random_targets(model, x), optimizer, precision)
        options = dict(optimizer=optimizer, precision=precision, device="cpu", checkpoint=levels)
        metered = training_memory(plan, batch, metered=True, **options)
        estimate = training_memory(plan, batch, **options)
        shape = "×".join(map(str, plan.input_size))
        lines.append(
            f"| {label} | {shape} × {batch} ({device}) | {optimizer or 'none'} | {precision} | "
            f"{_mib(metered.peak_bytes)} | {_mib(measured)} | {metered.peak_bytes / measured:.4f} | "
            f"{_mib(estimate.peak_bytes)} | {estimate.phase} |"
        )
        print(lines[-1], flush=True)
    return lines


# --- resident memory of real steps ---------------------------------------------------------------------------------

RSS_CASE = {"preset": "paper", "batch": 1, "optimizer": "sgd", "precision": "fp32"}




def rss_child(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: warm up, then the resident memory one step adds at its peak."""
    torch.set_num_threads(job["threads"])
    spec = unetgen.preset(job["preset"])
    model = unetgen.build(spec, seed=0).train()
    if job.get("checkpoint"):
        checkpoint_levels(model, job["checkpoint"])
    plan = model.plan
    x = torch.randn(job["batch"], spec.in_channels, *plan.input_size)
    targets = random_targets(model, x)
    optimizer = make_optimizer(job["optimizer"], model.parameters())
    for _ in range(2):
        training_step(model, x, targets, optimizer, job["precision"])
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    training_step(model, x, targets, optimizer, job["precision"])
    peak = _status("VmHWM")
    return {"before": before, "peak": peak}


def rss(repeats: int, threads: int) -> list[str]:
    """The mid-size case in fresh processes, with glibc's defaults and with eager release."""
    spec = unetgen.preset(RSS_CASE["preset"])
    plan = unetgen.make_plan(spec)
    memory = training_memory(plan, RSS_CASE["batch"], optimizer=RSS_CASE["optimizer"],
                             precision=RSS_CASE["precision"], device="cpu")
    working = memory.peak_bytes - memory.parameter_bytes - memory.optimizer_bytes - memory.input_bytes
    fixed = memory.peak_bytes - working
    allowed = budgeted_bytes(plan, estimate(plan, RSS_CASE["batch"], training=True, optimizer=RSS_CASE["optimizer"],
                                            precision=RSS_CASE["precision"], device="cpu")) - fixed
    lines = [
        f"{RSS_CASE['preset']} {'×'.join(map(str, plan.input_size))}, batch {RSS_CASE['batch']}, "
        f"{RSS_CASE['optimizer']}, {RSS_CASE['precision']}: estimate {_mib(memory.peak_bytes)} MiB at the step's peak "
        f"(weights {_mib(memory.parameter_bytes)}, optimizer state {_mib(memory.optimizer_bytes)}, batch "
        f"{_mib(memory.input_bytes)}; the step's own {_mib(working)})",
        "",
        "| allocator | resident before the step (MiB) | peak resident memory the step adds: median (min–max), MiB | "
        "/ the estimate's step peak | / the CPU budget's allowance for it |",
        "|---|---|---|---|---|",
    ]
    job = {**RSS_CASE, "threads": threads}
    for label, env in (("glibc defaults", {}), ("MALLOC_MMAP_THRESHOLD_=1MiB", {"MALLOC_MMAP_THRESHOLD_": str(2**20)})):
        rows = []
        for _ in range(repeats):
            done = subprocess.run([sys.executable, __file__, "--rss-child", json.dumps(job)], capture_output=True,
                                  text=True, check=True, env={**os.environ, **env})
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        added = [row["peak"] - row["before"] for row in rows]
        median = statistics.median(added)
        lines.append(f"| {label} | {_mib(statistics.median(r['before'] for r in rows))} | {_mib(median)} "
                     f"({_mib(min(added))}–{_mib(max(added))}) | {median / working:.2f} | {max(added) / allowed:.2f} |")
        print(lines[-1], flush=True)
    lines.append(f"\nthe CPU budget's allowance for the step's own memory (unetgen.planning.budget): {_mib(allowed)} MiB")
    return lines


def machine() -> str:
    cpu = platform.machine()
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            have = set(line.split(":", 1)[1].split())
            wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")
            flags = " ".join(f for f in wanted if f in have)
    return (f"{cpu}, {os.cpu_count()} cores ({flags}); Python {platform.python_version()}, torch {torch.__version__}; "
            f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="the table only")
    parser.add_argument("--rss", action="store_true", help="resident memory only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(json.loads(args.rss_child))))
        return
    torch.set_num_threads(args.threads)
    print(machine())
    if not args.rss:
        print("\n".join(table()))
    if not args.table:
        print("\n".join(rss(args.repeats, args.threads)))


if __name__ == "__main__":
    main()
