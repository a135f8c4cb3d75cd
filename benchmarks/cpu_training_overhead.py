"""What a CPU training step adds to resident memory beyond its estimate, network by network: the data behind the
CPU budget of ``unetgen.planning.budget`` (``TRAINING_OVERHEAD["cpu"]`` and ``largest_map_bytes``).

    python benchmarks/cpu_training_overhead.py              # eleven networks, a fresh process each (~5 min)
    python benchmarks/cpu_training_overhead.py --only paper nnunet2d

Each network runs in a fresh process that returns freed blocks at once (``unetgen.hardware.return_freed_memory()``,
as ``unetgen train`` does): two warm-up training steps (SGD, fp32), then the peak resident memory one more step
adds (``VmHWM`` after ``/proc/self/clear_refs``, less ``VmRSS`` before it), against the estimate's step peak less
the weights, the optimizer state and the batch (resident before). "Extra" is the difference; "copy rule" is
``largest_map_bytes`` × batch, what the budget adds for oneDNN.

Prints the Markdown table of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_status import status as _status  # noqa: E402

#: name → (preset or "planned 2D", spec changes, input size or None for the preset's, batch)
CASES: dict[str, tuple[str, dict[str, Any], list[int] | None, int]] = {
    "paper": ("paper", {}, None, 1),
    "paper, leaky ReLU": ("paper", {"activation": "leaky_relu"}, None, 1),
    "paper, same padding, 512²": ("paper", {"padding": "same"}, [512, 512], 1),
    "paper, instance norm": ("paper", {"norm": "instance"}, None, 1),
    "paper, batch norm": ("paper", {"norm": "batch"}, None, 1),
    "nnU-Net 2D, planned": ("planned 2D", {}, None, 2),
    "nnU-Net 2D, planned, ReLU": ("planned 2D", {"activation": "relu"}, None, 2),
    "nnU-Net 2D, planned, no norm": ("planned 2D", {"norm": "none"}, None, 2),
    "cicek3d, 100×100×92": ("cicek3d", {}, [100, 100, 92], 1),
    "cicek3d, no norm, 100×100×92": ("cicek3d", {"norm": "none"}, [100, 100, 92], 1),
    "nnU-Net 3D, planned": ("planned 3D", {}, None, 2),
}




def child(name: str, threads: int) -> dict[str, Any]:
    import torch

    import unetgen
    from unetgen.hardware import return_freed_memory
    from unetgen.network.measure import make_optimizer, random_targets, training_step
    from unetgen.planning.budget import largest_map_bytes
    from unetgen.planning.planner import plan_for
    from unetgen.planning.training import training_memory

    return_freed_memory()
    torch.set_num_threads(threads)
    source, changes, size, batch = CASES[name]
    if source == "planned 2D":
        spec = plan_for((0.78, 0.78), (400, 400), 1, 3, 2**30, precision="fp32", device="cpu").spec
    elif source == "planned 3D":
        spec = plan_for((1, 1, 1), (139, 170, 138), 4, 4, 3 * 2**29, precision="fp32", device="cpu").spec
    else:
        spec = unetgen.preset(source)
    if changes or size:
        spec = spec.replace(**changes, **({"input_size": size} if size else {}))
    model = unetgen.build(spec, seed=0).train()
    plan = model.plan
    x = torch.randn(batch, spec.in_channels, *plan.input_size)
    targets = random_targets(model, x)
    optimizer = make_optimizer("sgd", model.parameters())
    for _ in range(2):
        training_step(model, x, targets, optimizer, "fp32")
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    training_step(model, x, targets, optimizer, "fp32")
    added = _status("VmHWM") - before
    memory = training_memory(plan, batch, optimizer="sgd", precision="fp32", device="cpu")
    own = memory.peak_bytes - memory.parameter_bytes - memory.optimizer_bytes - memory.input_bytes
    return {"name": name, "size": list(plan.input_size), "batch": batch, "own": own, "added": added,
            "copy_rule": largest_map_bytes(plan) * batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", help="names starting with these words")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.threads)))
        return
    from training_memory import machine

    print(machine())
    print("| network | input × batch | estimate: the step's own memory (MiB) | resident memory the step adds (MiB) | "
          "extra (MiB) | added / own | copy rule (MiB) |")
    print("|---|---|---|---|---|---|---|")
    mib = lambda n: f"{n / 2**20:,.1f}"  # noqa: E731
    for name in CASES:
        if args.only and not any(name.startswith(word) for word in args.only):
            continue
        done = subprocess.run([sys.executable, __file__, "--child", name, "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {'×'.join(map(str, r['size']))} × {r['batch']} | {mib(r['own'])} | {mib(r['added'])} | "
              f"{mib(r['added'] - r['own'])} | {r['added'] / r['own']:.3f} | {mib(r['copy_rule'])} |", flush=True)


if __name__ == "__main__":
    main()
