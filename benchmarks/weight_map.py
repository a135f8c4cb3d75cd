"""Does the paper's weight map help? A small paper-style network trained with and without it on synthetic cells.

Both arms train the same network (valid convolutions, He initialisation, dropout at the end of the contracting
path; ``SPEC`` below) on the same synthetic data set of touching and overlapping cells
(:mod:`unetgen.training.synthetic`), with the paper's recipe (SGD, momentum 0.99, lr 0.003, one patch per step,
elastic deformations): one with the weighted cross-entropy of the paper's weight map (w0 = 10, σ = 5 px, from the
instance labels), one with plain cross-entropy. Nothing else differs: seeds, data order, patches and augmentation are the same.
Each trained network segments held-out images with ``unetgen.predict``; the connected components of its foreground
are its cells. Reported per arm and seed:

* AP@0.5: true cells matched by a predicted cell with IoU > 0.5, over matched + unmatched true + unmatched predicted
  cells (the Data Science Bowl 2018's "average precision", as StarDist and Cellpose report it);
* touching pairs split: of the pairs of true cells that share a border, the share whose cells are mostly covered by
  two different predicted cells;
* pixel Dice of the foreground class against the masks.

    python benchmarks/weight_map.py                 # the table in benchmarks/README.md (~1 h on 2 quiet cores)
    python benchmarks/weight_map.py --quick         # a few minutes: fewer images and epochs, one seed

Each arm runs in its own process (``--jobs`` at a time, one torch thread each). Prints a Markdown table and writes
the numbers as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """name: cells
description: a small paper-style network (depth 4, width 16, valid convolutions)
depth: 4
width: 16
dropout: 0.5
dropout_at: bottleneck
init: paper
"""


def _machine() -> dict[str, str]:
    """The CPU's model and the vector instruction sets it has, the load, the library versions."""
    import numpy
    import torch

    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile"]
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "instruction sets": " ".join(flag for flag in wanted if flag in flags) or "unknown",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def _arm(args: argparse.Namespace) -> None:
    """One arm, one seed: train, then score on the held-out images; prints one JSON line."""
    import torch

    import unetgen
    from unetgen.inference.images import read_image
    from unetgen.training.metrics import InstanceScores, Overlap, instance_scores, instances_of

    torch.set_num_threads(1)
    root = Path(args.data)
    started = time.perf_counter()
    config = unetgen.TrainConfig(
        spec=str(root / "cells.yaml"), images=str(root / "train/images"), masks=str(root / "train/masks"),
        instances=str(root / "train/instances"), out=str(Path(args.out)), epochs=args.epochs, seed=args.seed,
        loss="weighted-ce" if args.arm == "weight map" else "ce", patch_size=(args.patch,),
        patches_per_image=args.patches, lr=args.lr,
    )
    try:
        result = unetgen.train(config)
    except unetgen.UNetGenError as exc:  # a run that diverged: reported as such
        print(json.dumps({"arm": args.arm, "seed": args.seed, "failed": str(exc)}))
        return
    seconds = time.perf_counter() - started
    model = unetgen.load(Path(args.out) / "last.pt")
    scores = InstanceScores(0, 0, 0, 0, 0)
    overlap = Overlap.empty(2)
    for path in sorted((root / "test/images").iterdir()):
        image = read_image(path).pixels
        labels = unetgen.predict(model, image, output="labels")
        truth = read_image(root / "test/instances" / path.name).pixels
        mask = read_image(root / "test/masks" / path.name).pixels
        scores = scores + instance_scores(truth, instances_of(labels))
        overlap.add(labels, mask)
    print(json.dumps({
        "arm": args.arm, "seed": args.seed, "ap50": scores.average_precision, "split": scores.split_share,
        "touching_pairs": scores.touching_pairs, "split_pairs": scores.split_pairs, "dice": overlap.dice()[1],
        "true_cells": scores.true_positives + scores.false_negatives,
        "predicted_cells": scores.true_positives + scores.false_positives, "final_loss": result.rows[-1]["loss"],
        "train_seconds": round(seconds, 1),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and epochs, one seed: a few minutes")
    parser.add_argument("--train", type=int, default=24, help="training images (default 24)")
    parser.add_argument("--test", type=int, default=12, help="held-out images (default 12)")
    parser.add_argument("--size", type=int, default=192, help="image size (default 192)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs (default 40)")
    parser.add_argument("--patches", type=int, default=4, help="patches per image per epoch (default 4)")
    parser.add_argument("--patch", type=int, default=180, help="input patch size (default 180 → 92 out)")
    parser.add_argument("--lr", type=float, help="SGD learning rate (default: the paper recipe's, 0.003)")
    parser.add_argument("--gap", type=int, default=2, choices=(1, 2),
                        help="the masks' border between touching cells, pixels (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default 0 1)")
    parser.add_argument("--jobs", type=int, default=2, help="arms trained at once (default 2)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        _arm(args)
        return
    if args.quick:
        args.train, args.test, args.epochs, args.seeds = 8, 4, 8, [0]
    from unetgen.training.synthetic import write_cells

    machine = _machine()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        size = (args.size, args.size)
        write_cells(root / "train", count=args.train, size=size, seed=100, prefix="train", gap=args.gap)
        write_cells(root / "test", count=args.test, size=size, seed=200, prefix="test", gap=args.gap)
        (root / "cells.yaml").write_text(SPEC)
        runs = [(arm, seed) for seed in args.seeds for arm in ("weight map", "plain")]
        pending, results = list(runs), []
        active: list[subprocess.Popen] = []
        env = dict(os.environ, OMP_NUM_THREADS="1")
        started = time.perf_counter()
        while pending or active:
            while pending and len(active) < args.jobs:
                arm, seed = pending.pop(0)
                command = [sys.executable, __file__, "--arm", arm, "--seed", str(seed), "--data", str(root),
                           "--out", str(root / f"run-{arm.replace(' ', '-')}-{seed}"), "--epochs", str(args.epochs),
                           "--patches", str(args.patches), "--patch", str(args.patch)]
                command += ["--lr", str(args.lr)] if args.lr is not None else []
                active.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env))
            done = active.pop(0)
            out, _ = done.communicate()
            if done.returncode != 0:
                for other in active:  # the data folder goes away with this process: stop them first
                    other.terminate()
                    other.wait()
                raise SystemExit(f"an arm failed (exit {done.returncode})")
            results.append(json.loads(out.strip().splitlines()[-1]))
        machine["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        machine["wall time"] = f"{time.perf_counter() - started:.0f} s"
    settings = {key: getattr(args, key) for key in ("train", "test", "size", "epochs", "patches", "patch", "lr",
                                                   "gap", "seeds")}
    print(f"machine: {json.dumps(machine)}")
    print(f"settings: {json.dumps(settings)}")
    print()
    print("| loss | seed | AP@0.5 | touching pairs split | pixel Dice | cells true / predicted | final loss | "
          "training time |")
    print("|---|---|---|---|---|---|---|---|")
    failed = [r for r in results if "failed" in r]
    results = [r for r in results if "failed" not in r]
    for row in failed:
        print(f"| {row['arm']} | {row['seed']} | {row['failed']} | | | | | |")
    for row in sorted(results, key=lambda r: (r["arm"] != "weight map", r["seed"])):
        print(f"| {row['arm']} | {row['seed']} | {row['ap50']:.3f} | {row['split']:.3f} ({row['split_pairs']}/"
              f"{row['touching_pairs']}) | {row['dice']:.3f} | {row['true_cells']} / {row['predicted_cells']} | "
              f"{row['final_loss']:.4f} | {row['train_seconds']:.0f} s |")
    for arm in ("weight map", "plain"):
        mine = [r for r in results if r["arm"] == arm]
        if not mine:
            continue
        mean = {key: sum(r[key] for r in mine) / len(mine) for key in ("ap50", "split", "dice")}
        print(f"| **{arm}, mean** | | **{mean['ap50']:.3f}** | **{mean['split']:.3f}** | **{mean['dice']:.3f}** "
              "| | | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "settings": settings, "results": results + failed},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
