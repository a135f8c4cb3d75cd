"""ONNX export of the paper network: export time, and latency on onnxruntime against eager torch (CPU, fp32).

    python benchmarks/export_onnx.py            # 2 warm-up runs, then 10 timed runs of each, interleaved
    python benchmarks/export_onnx.py --quick    # 1 warm-up run, 3 timed runs

The network is the `paper` preset (Ronneberger et al. 2015, 31,030,658 parameters) at 572×572, batch 1, with
the same weights in both runtimes (``build(seed=0)``, exported with ``unetgen.export_onnx``). Torch and
onnxruntime run alternately, one pass each per round, so background load affects both alike; the table gives
the median and the spread (min–max) of the timed rounds. Both use the same number of threads (``--threads``,
default: every core). Prints a Markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import unetgen
from unetgen.export.contract import INPUT_NAME


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:,.0f} ms ({min(seconds) * 1e3:,.0f}–{max(seconds) * 1e3:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 warm-up run and 3 timed runs instead of 2 and 10")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for torch and onnxruntime")
    args = parser.parse_args()
    warmup, runs = (1, 3) if args.quick else (2, 10)
    torch.set_num_threads(args.threads)

    model = unetgen.build("paper", seed=0).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "paper.onnx"
        started = time.perf_counter()
        report = unetgen.export_onnx(model, path)  # in a fresh process: includes loading the exporter
        total = time.perf_counter() - started
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        started = time.perf_counter()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session_seconds = time.perf_counter() - started
        file_mib = path.stat().st_size / 2**20

    x = np.random.default_rng(0).standard_normal((1, 1, 572, 572), dtype=np.float32)
    x_torch = torch.from_numpy(x)
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    with torch.inference_mode():
        for round_ in range(warmup + runs):
            for name in times:
                started = time.perf_counter()
                if name == "torch":
                    y_torch = model(x_torch).numpy()
                else:
                    (y_ort,) = session.run(None, {INPUT_NAME: x})
                if round_ >= warmup:
                    times[name].append(time.perf_counter() - started)
    relative = float(np.abs(y_ort - y_torch).max() / np.abs(y_torch).max())

    print(
        f"machine: {_cpu()}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"onnx opset {report.opset}; float32; {args.threads} threads each (torch.set_num_threads, "
        f"onnxruntime intra_op_num_threads; inter_op 1); {warmup} warm-up + {runs} timed rounds"
    )
    print()
    print("| paper network, 1×1×572×572 → 1×2×388×388 | time |")
    print("|---|---|")
    print(f"| export: torch.export + torch.onnx (dynamic batch and sizes) | {report.export_seconds:.1f} s |")
    print(f"| checks: onnx.checker + 3 onnxruntime runs against torch | {report.verify_seconds:.1f} s |")
    print(f"| `export_onnx` in all (fresh process; {file_mib:.1f} MiB file) | {total:.1f} s |")
    print(f"| onnxruntime session creation | {session_seconds:.2f} s |")
    print(f"| latency, eager torch (`inference_mode`): median (min–max) | {_ms(times['torch'])} |")
    print(f"| latency, onnxruntime CPU: median (min–max) | {_ms(times['onnxruntime'])} |")
    speedup = statistics.median(times["torch"]) / statistics.median(times["onnxruntime"])
    print(f"| onnxruntime speed-up over torch (medians) | {speedup:.2f}× |")
    print(f"| max \\|onnxruntime − torch\\| / max \\|torch\\| | {relative:.1e} |")


if __name__ == "__main__":
    main()
