"""Memory budgets against measured memory: the overhead factor ``unetgen.planning.budget`` applies, and
``unetgen.predict`` within its budget from 1024² to 4096² (CPU, the paper network).

    python benchmarks/memory_budget.py                      # both parts (tens of minutes on 2 cores)
    python benchmarks/memory_budget.py --overhead           # the factor: single passes at four tile sizes
    python benchmarks/memory_budget.py --predict --sizes 1024 2048 4096 --budgets 1GiB

**Overhead.** In a fresh process per case: the paper network (seeded weights), one warm-up pass on a small tile,
``/proc/self/clear_refs``, then one pass of a tile through the network's core (``build``) or through
``unetgen.optimize``'s copy (``optimize``, what ``predict`` runs where the budget has room for the copy's weights,
which are made before the measurement here): the peak resident memory less the memory before the input is made,
against the plan's activation estimate (input, activations and output; ``unetgen.estimate``). glibc's defaults, as
users run. The largest ratio, rounded up, is ``INFERENCE_OVERHEAD``.

**predict.** In a fresh process per image size and budget: the network and a random float32 image, then
``unetgen.predict(model, image, memory=budget)`` (labels out). "Measured" is what the call used: the network's
weights plus the peak resident memory during the call less the memory before it less the output array (the
promise a budget makes: weights + one pass's working memory, whatever the image's size). The budget holds where
measured ≤ budget.

Prints Markdown tables (the ones in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_status import status as _status  # noqa: E402




def overhead_child(job: dict) -> dict:
    import torch

    import unetgen

    torch.set_num_threads(job["threads"])
    model = unetgen.build("paper", seed=0).eval()
    runner = unetgen.optimize(model).core() if job["path"] == "optimize" else model.core()
    with torch.inference_mode():
        runner(torch.randn(1, 1, 188, 188))
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    with torch.inference_mode():
        x = torch.randn(job["batch"], 1, job["window"], job["window"])
        y = runner(x)
    peak = _status("VmHWM")
    del y
    plan = unetgen.make_plan(model.spec, (job["window"], job["window"]))
    return {"added": peak - before, "activations": unetgen.estimate(plan, batch=job["batch"]).activation_bytes}


def predict_child(job: dict) -> dict:
    import numpy as np
    import torch

    import unetgen
    from unetgen.inference.tiling import plan_tiles

    torch.set_num_threads(job["threads"])
    model = unetgen.build("paper", seed=0)
    image = np.random.default_rng(0).random((job["size"], job["size"]), dtype=np.float32)
    layout = plan_tiles(model.spec, image.shape, memory=job["budget"])
    before = _status("VmRSS")
    output = unetgen.predict(model, image, memory=job["budget"])
    peak = _status("VmHWM")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"layout": layout.describe(), "estimate": layout.estimate_bytes, "budgeted": layout.peak_bytes,
            "budget": layout.budget, "weights": weights, "working": peak - before - output.nbytes}


def _child(kind: str, job: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, f"--{kind}-child", json.dumps(job)], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} {job}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overhead", action="store_true", help="the overhead factor only")
    parser.add_argument("--predict", action="store_true", help="predict within its budget only")
    parser.add_argument("--windows", type=int, nargs="+", default=[380, 572, 764, 1020])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--budgets", nargs="+", default=["1GiB"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overhead-child", help=argparse.SUPPRESS)
    parser.add_argument("--predict-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.overhead_child:
        print(json.dumps(overhead_child(json.loads(args.overhead_child))))
        return
    if args.predict_child:
        print(json.dumps(predict_child(json.loads(args.predict_child))))
        return
    from training_memory import machine

    print(machine())
    if not args.predict:
        print("| tile (paper network) | path | activation estimate (MiB) | measured: peak RSS the pass adds (MiB) | "
              "measured / estimate |")
        print("|---|---|---|---|---|")
        for window in args.windows:
            for path in ("build", "optimize"):
                row = _child("overhead", {"window": window, "batch": 1, "path": path, "threads": args.threads})
                print(f"| {window}² | {path} | {_mib(row['activations'])} | {_mib(row['added'])} | "
                      f"{row['added'] / row['activations']:.2f} |", flush=True)
    if not args.overhead:
        print("| image | budget | tiles | estimate per pass (MiB) | budgeted per pass, with the overhead (MiB) | "
              "measured: weights + working memory (MiB) | measured / budget |")
        print("|---|---|---|---|---|---|---|")
        for budget in args.budgets:
            for size in args.sizes:
                row = _child("predict", {"size": size, "budget": budget, "threads": args.threads})
                used = row["weights"] + row["working"]
                print(f"| {size}² | {budget} | {row['layout'].split(',')[0]} | {_mib(row['estimate'])} | "
                      f"{_mib(row['budgeted'])} | {_mib(used)} | {used / row['budget']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
