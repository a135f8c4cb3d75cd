"""The planner's promise, measured: three configurations planned by ``unetgen.planning.planner.plan_for`` for the
CPU, trained for three steps in fresh processes; the memory they use against the budget they were planned for.

    python benchmarks/planner_memory.py          # three configurations (several minutes on 2 cores)

Each configuration is planned with ``device="cpu"``, ``precision="fp32"`` and SGD (nnU-Net's). In a fresh process:
torch and unetgen are imported and a small network runs one training step (libraries, oneDNN's kernels), then the
resident memory is read ("base"); the planned network is built (seeded), its batch made, and three training steps
run. "Used" is the process's peak resident memory (``VmHWM``) less the base: the weights, the optimizer state, the
batch and everything the steps touched: as ``unetgen train`` runs (it calls
``unetgen.hardware.return_freed_memory()``: freed blocks of 1 MiB or more returned at once), and, for comparison,
a loop of one's own that leaves glibc's defaults. The promise is used ≤ budget and ≥ 85% of it as ``unetgen train``
runs; the planner aims the budgeted figure (the estimate with the measured overhead, for the CPU:
``unetgen.planning.budget.TRAINING_OVERHEAD["cpu"]``) as near the budget as neighbouring patches allow.

Prints a Markdown table (the one in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_status import status as _status  # noqa: E402

GiB = 2**30
#: (label, spacing, median shape, channels, classes, budget)
CONFIGURATIONS = [
    ("2D, 0.78 mm, 400², 1 channel, 3 classes", (0.78, 0.78), (400, 400), 1, 3, 1 * GiB),
    ("3D anisotropic, 3 × 0.78 × 0.78 mm, 90×400×400, 1 channel, 3 classes", (3, 0.78, 0.78), (90, 400, 400), 1, 3,
     2 * GiB),
    ("3D isotropic, 1 mm, 139×170×138, 4 channels, 4 classes", (1, 1, 1), (139, 170, 138), 4, 4, 1.5 * GiB),
]




def child(index: int, threads: int, glibc_defaults: bool) -> dict:
    import torch

    import unetgen
    from unetgen import hardware
    from unetgen.network.measure import make_optimizer, random_targets, training_step
    from unetgen.planning.planner import plan_for

    torch.set_num_threads(threads)
    if not glibc_defaults:
        hardware.return_freed_memory()  # as unetgen train does
    small = unetgen.build(unetgen.UNetSpec(width=4, depth=3, padding="same"), seed=0)
    x = torch.randn(2, 1, 32, 32)
    training_step(small, x, random_targets(small, x), make_optimizer("sgd", small.parameters()))
    del small, x
    label, spacing, shape, channels, classes, budget = CONFIGURATIONS[index]
    planned = plan_for(spacing, shape, channels, classes, int(budget), precision="fp32", device="cpu")
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    model = unetgen.build(planned.spec, seed=0)
    x = torch.randn(planned.batch, channels, *planned.patch)
    targets = random_targets(model, x)
    optimizer = make_optimizer("sgd", model.parameters())
    for _ in range(3):
        training_step(model, x, targets, optimizer)
    return {"label": label, "patch": list(planned.patch), "batch": planned.batch, "budget": int(budget),
            "estimate": planned.estimate_bytes, "budgeted": planned.budgeted_bytes, "used": _status("VmHWM") - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--glibc-defaults", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.threads, args.glibc_defaults)))
        return
    from training_memory import machine

    print(machine())
    print("| configuration | budget | planned: patch × batch | estimate | budgeted (with the overhead) | measured: "
          "used, as `unetgen train` runs | used, a loop of one's own with glibc's defaults |")
    print("|---|---|---|---|---|---|---|")
    mib = lambda n: f"{n / 2**20:,.0f} MiB"  # noqa: E731
    for index in range(len(CONFIGURATIONS)):
        rows = []
        for extra in ([], ["--glibc-defaults"]):
            done = subprocess.run([sys.executable, __file__, "--child", str(index), "--threads", str(args.threads),
                                   *extra], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = rows[0]
        used = [f"{mib(r['used'])} ({r['used'] / r['budget']:.0%})" for r in rows]
        print(f"| {row['label']} | {mib(row['budget'])} | {'×'.join(map(str, row['patch']))} × {row['batch']} | "
              f"{mib(row['estimate'])} | {mib(row['budgeted'])} ({row['budgeted'] / row['budget']:.0%}) | "
              f"{used[0]} | {used[1]} |", flush=True)


if __name__ == "__main__":
    main()
