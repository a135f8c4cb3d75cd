"""bfloat16 and int8 inference against float32, side by side, and what they change in a trained network's labels.

    python benchmarks/precision.py                 # latency of the three presets, 5 rounds, and agreement
    python benchmarks/precision.py --quick         # 3 rounds
    python benchmarks/precision.py --only paper --skip-agreement
    python benchmarks/precision.py --json results.json

**Latency** (issue 17's table): each preset at its paper size — ``paper`` 572², ``modern`` 576², ``cicek3d``
132×132×116 — with seeded weights (speed does not depend on their values), batch 1, 2 threads, four paths:

* ``fp32 optimize()`` — :func:`unetgen.optimize` (batch norm folded, channels-last), float32;
* ``bf16 optimize()`` — ``unetgen.optimize(model, dtype=torch.bfloat16)``;
* ``onnxruntime fp32`` — the file :func:`unetgen.export_onnx` writes, on onnxruntime's CPU provider;
* ``onnxruntime int8`` — that file quantized by :func:`unetgen.export.quantize.quantize_int8`, the function
  ``export --quantize int8`` uses, calibrated on 4 random tiles (the ranges do not change the speed).

Each round runs every path once, in an order that rotates each round, after one warm-up pass of each; latency is
the median (min–max) of the rounds, ratios are of medians from the same run. The machine is shared: before
starting, the script waits (``--wait``) for the 1-minute load average to fall below 1, and it records the load
average at every round, so a table says how quiet it was.

**Agreement** (a fair test needs a trained network: an untrained one's logits nearly tie): a paper-style network
(valid convolutions, 5 levels; ``--width`` channels at the top, default 16) is trained with ``unetgen train`` on
unetgen's seeded synthetic cells (``unetgen.training.synthetic``: 24 images of 256², seed 0), or read from
``--checkpoint``. Eight other images (512², seed 1) are held out: every path segments them by
:func:`unetgen.predict` (tiles included) and its labels are compared with float32's (pixel agreement, Dice of the
foreground between the two label maps) and with the ground truth (Dice). The int8 file is the one ``unetgen export
--quantize int8`` writes, calibrated on the training images and checked on the held-out ones.

Prints the machine (CPU model, cores, instruction sets, versions) and the Markdown tables of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

import unetgen
from unetgen import hardware
from unetgen.cli import main as cli
from unetgen.export.quantize import quantize_int8
from unetgen.inference.images import read_image
from unetgen.training.synthetic import write_cells

THREADS = 2
CASES = {"paper": (572, 572), "modern": (576, 576), "cicek3d": (132, 132, 116)}
PATHS = ("fp32 optimize()", "bf16 optimize()", "onnxruntime fp32", "onnxruntime int8")
#: Issue 17's targets on this CPU.
INT8_SPEEDUP, BF16_SPEEDUP, AGREEMENT = 3.0, 1.8, 0.995
CACHE = Path(__file__).resolve().parent / ".cache"


# --- the machine -----------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpu": hardware.cpu_model(),
        "cores": os.cpu_count(),
        "instruction_sets": hardware.instruction_sets(),
        "bf16 fast path": hardware.missing_instructions("bf16") or "yes",
        "fp16 fast path": hardware.missing_instructions("fp16") or "yes",
        "int8 fast path": hardware.missing_instructions("int8") or "yes",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "threads": THREADS,
        "load_average_at_start": os.getloadavg(),
    }


def wait_until_quiet(wait: float, limit: float = 1.0, interval: float = 30.0) -> float:
    """Wait up to ``wait`` seconds for the 1-minute load average to fall below ``limit``; the load then."""
    deadline = time.monotonic() + wait
    load = os.getloadavg()[0]
    while load >= limit and time.monotonic() < deadline:
        print(f"load average {load:.2f} ≥ {limit}: waiting for a quiet machine ...", file=sys.stderr, flush=True)
        time.sleep(interval)
        load = os.getloadavg()[0]
    return load


# --- latency ---------------------------------------------------------------------------------------------------------


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def make_paths(name: str, folder: Path) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """The four paths of a preset, each a callable on the same input, and what making them cost."""
    size = CASES[name]
    spec = unetgen.preset(name)
    model = unetgen.build(spec, size, seed=0).eval()
    x = torch.rand(1, spec.in_channels, *size, generator=torch.Generator().manual_seed(0))
    fp32 = unetgen.optimize(model)
    bf16 = unetgen.optimize(model, dtype=torch.bfloat16)
    onnx_fp32 = folder / f"{name}.onnx"
    unetgen.export_onnx(model, onnx_fp32, input_size=size, verify=False)
    onnx_int8 = folder / f"{name}.int8.onnx"
    generator = np.random.default_rng(0)
    tiles = [generator.random((1, spec.in_channels, *size), dtype=np.float32) for _ in range(4)]
    started = time.perf_counter()
    summary = quantize_int8(onnx_fp32, onnx_int8, tiles, "image")
    quantize_seconds = time.perf_counter() - started
    sessions = {"onnxruntime fp32": _session(onnx_fp32), "onnxruntime int8": _session(onnx_int8)}
    feed = {"image": x.numpy()}

    def torch_run(module: torch.nn.Module) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return module(x)
        return run

    def ort_run(session: ort.InferenceSession) -> Callable[[], Any]:
        return lambda: session.run(None, feed)[0]

    runs = {
        "fp32 optimize()": torch_run(fp32),
        "bf16 optimize()": torch_run(bf16),
        "onnxruntime fp32": ort_run(sessions["onnxruntime fp32"]),
        "onnxruntime int8": ort_run(sessions["onnxruntime int8"]),
    }
    return runs, {"quantize_seconds": quantize_seconds, "reduce_range": summary["reduce_range"]}


def measure_latency(name: str, rounds: int, folder: Path) -> dict[str, Any]:
    """Latency of the four paths of a preset, rounds rotating the order; outputs compared with float32's."""
    runs, made = make_paths(name, folder)
    outputs = {path: np.asarray(run(), dtype=np.float32) for path, run in runs.items()}  # the warm-up pass
    reference = outputs["fp32 optimize()"]
    scale = float(np.abs(reference).max())
    times: dict[str, list[float]] = {path: [] for path in runs}
    loads = []
    order = list(runs)
    for round_ in range(rounds):
        loads.append(os.getloadavg()[0])
        for path in order[round_ % len(order):] + order[: round_ % len(order)]:
            started = time.perf_counter()
            runs[path]()
            times[path].append(time.perf_counter() - started)
    result: dict[str, Any] = {"size": list(CASES[name]), "rounds": rounds, "load_averages": loads, **made, "paths": {}}
    for path in runs:
        seconds = times[path]
        labels_agree = float(np.mean(outputs[path].argmax(1) == reference.argmax(1)))
        result["paths"][path] = {
            "median": statistics.median(seconds), "min": min(seconds), "max": max(seconds), "seconds": seconds,
            "error": float(np.abs(outputs[path] - reference).max()) / scale,
            "untrained_label_agreement": labels_agree,
        }
    paths = result["paths"]
    result["bf16_speedup"] = paths["fp32 optimize()"]["median"] / paths["bf16 optimize()"]["median"]
    result["int8_speedup"] = paths["onnxruntime fp32"]["median"] / paths["onnxruntime int8"]["median"]
    return result


# --- agreement on a trained network ------------------------------------------------------------------------------------


def spec_text(width: int) -> str:
    return (
        f"name: cells-paper-w{width}\n"
        f"description: the paper's U-Net (valid convolutions, 5 levels) with {width} channels at the top, for "
        "benchmarks/precision.py\n"
        f"width: {width}\n"
    )


def trained_network(width: int, epochs: int, checkpoint: str | None) -> Path:
    """A paper-style network trained on synthetic cells (cached under benchmarks/.cache), or ``checkpoint``."""
    if checkpoint is not None:
        return Path(checkpoint)
    run = CACHE / f"cells-paper-w{width}-e{epochs}"
    best = run / "best.pt"
    if best.is_file():
        return best
    training_images()
    (CACHE / f"cells-paper-w{width}.yaml").write_text(spec_text(width))
    print(f"training a paper-style network, width {width}, {epochs} epochs (cached in {run}) ...", file=sys.stderr)
    status = cli([
        "train", str(CACHE / f"cells-paper-w{width}.yaml"), "--images", str(CACHE / "cells-train" / "images"),
        "--masks", str(CACHE / "cells-train" / "masks"), "--val-fraction", "0.2", "--out", str(run),
        "--recipe", "modern", "--lr", "0.001", "--epochs", str(epochs), "--patches-per-image", "4", "--seed", "0",
    ])
    if status != 0:
        raise SystemExit(f"unetgen train failed with status {status}")
    return best


def training_images() -> Path:
    """The synthetic cells the network is trained (and int8 calibrated) on, written once into the cache."""
    if not CACHE.is_dir():
        CACHE.mkdir()
        (CACHE / ".gitignore").write_text("*\n")
    folder = CACHE / "cells-train"
    if not (folder / "images").is_dir():
        write_cells(folder, count=24, size=(256, 256), seed=0)
    return folder


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    both = np.count_nonzero(a & b)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2 * both / total


def measure_agreement(checkpoint: Path, folder: Path) -> dict[str, Any]:
    """Each path's labels on held-out synthetic cells against float32's and against the ground truth."""
    test = folder / "cells-test"
    write_cells(test, count=8, size=(512, 512), seed=1)
    model = unetgen.load(checkpoint)
    images = [read_image(path).pixels for path in sorted((test / "images").iterdir())]
    truths = [read_image(path).pixels > 0 for path in sorted((test / "masks").iterdir())]
    int8 = folder / "trained.int8.onnx"
    report = unetgen.export_onnx(
        model, int8, quantize="int8", calibration=training_images() / "images", check_images=test / "images",
        thresholds={"min_agreement": 0.0, "min_dice": 0.0},
    )
    fp32_onnx = folder / "trained.onnx"
    unetgen.export_onnx(model, fp32_onnx, verify=False)
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "fp32 optimize()": lambda image: unetgen.predict(model, image, output="labels"),
        "bf16 optimize()": lambda image: unetgen.predict(model, image, output="labels", precision="bf16"),
        "onnxruntime fp32": lambda image: unetgen.predict(fp32_onnx, image, output="labels"),
        "onnxruntime int8": lambda image: unetgen.predict(int8, image, output="labels"),
    }
    labels = {path: [run(image) > 0 for image in images] for path, run in paths.items()}
    reference = labels["fp32 optimize()"]
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "spec": model.spec.model_dump(mode="json", exclude_defaults=True),
        "parameters": sum(p.numel() for p in model.parameters()), "held_out_images": len(images),
        "pixels": int(sum(t.size for t in truths)), "int8_export": report.lowered.to_dict(), "paths": {},
    }
    for path, maps in labels.items():
        same = sum(int(np.count_nonzero(a == b)) for a, b in zip(maps, reference))
        result["paths"][path] = {
            "label_agreement": same / result["pixels"],
            "foreground_dice_vs_fp32": _dice(np.concatenate([m.ravel() for m in maps]),
                                             np.concatenate([m.ravel() for m in reference])),
            "dice_vs_truth": _dice(np.concatenate([m.ravel() for m in maps]),
                                   np.concatenate([t.ravel() for t in truths])),
        }
    return result


# --- tables ----------------------------------------------------------------------------------------------------------


def latency_table(results: dict[str, Any]) -> str:
    lines = [
        "| case | fp32 `optimize()` | bf16 `optimize()` | onnxruntime fp32 | onnxruntime int8 | bf16 speed-up "
        "(× fp32 `optimize()`) | int8 speed-up (× onnxruntime fp32) | load average during the rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, case in results.items():
        cells = []
        for path in PATHS:
            t = case["paths"][path]
            cells.append(f"{1000 * t['median']:,.0f} ms ({1000 * t['min']:,.0f}–{1000 * t['max']:,.0f})")
        loads = case["load_averages"]
        lines.append(
            f"| {name} {'×'.join(map(str, case['size']))} | " + " | ".join(cells)
            + f" | {case['bf16_speedup']:.2f} | {case['int8_speedup']:.2f} | {min(loads):.1f}–{max(loads):.1f} |"
        )
    return "\n".join(lines)


def agreement_table(result: dict[str, Any]) -> str:
    lines = [
        "| path | label agreement with fp32 | foreground Dice vs fp32 | Dice vs ground truth |",
        "|---|---|---|---|",
    ]
    for path, row in result["paths"].items():
        lines.append(
            f"| {path} | {100 * row['label_agreement']:.3f}% | {row['foreground_dice_vs_fp32']:.4f} | "
            f"{row['dice_vs_truth']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=list(CASES), action="append", help="these presets only")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--checkpoint", help="a trained checkpoint to measure agreement on (default: train one)")
    parser.add_argument("--width", type=int, default=16, help="the trained network's width (default 16)")
    parser.add_argument("--epochs", type=int, default=15, help="its training epochs (default 15)")
    parser.add_argument("--wait", type=float, default=1800, help="seconds to wait for load average < 1")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    rounds = 3 if args.quick else args.rounds
    results: dict[str, Any] = {"machine": machine()}
    checkpoint = None if args.skip_agreement else trained_network(args.width, args.epochs, args.checkpoint)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        results["load_average_before_timing"] = wait_until_quiet(args.wait)
        if not args.skip_latency:
            results["latency"] = {name: measure_latency(name, rounds, folder) for name in args.only or CASES}
        if checkpoint is not None:
            results["agreement"] = measure_agreement(checkpoint, folder)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results["machine"], indent=2))
    if "latency" in results:
        print(latency_table(results["latency"]))
    if "agreement" in results:
        print(agreement_table(results["agreement"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
