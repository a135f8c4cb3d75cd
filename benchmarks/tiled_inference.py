"""Overlap-tile inference with the paper's network: peak memory and throughput as the image grows.

For each image size, one fresh process builds the paper network (seeded weights), makes a random float32 image and
runs ``unetgen.predict`` with the default memory budget; it reports the layout, the time, and the process's peak
resident memory (``VmHWM``) against its resident memory just before the call. Where the whole mirrored image fits
(by the plan's estimate, at most ``--single-max``), the same image is also run as one pass (one tile: the whole
mirror-padded image), and the two outputs are compared.

    python benchmarks/tiled_inference.py            # 1024², 2048², 4096² (several minutes per size on 2 cores)
    python benchmarks/tiled_inference.py --quick    # 256², 512² with a 256 MiB budget: a minute or two

Prints a Markdown table (the one in benchmarks/README.md).
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
from proc_status import status as _status




def _child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    import unetgen
    from unetgen.inference.tiling import plan_tiles

    torch.manual_seed(0)
    model = unetgen.build("paper", seed=0)
    image = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    if args.mode == "single":  # one tile: the whole mirror-padded image in one pass
        tile = 10**6
        unetgen.set_memory_limit(0)
    else:
        tile = None
    layout = plan_tiles(model.spec, image.shape, tile_size=tile, memory=args.memory)
    before = _status("VmRSS")
    started = time.perf_counter()
    output = unetgen.predict(model, image, tile_size=tile, memory=args.memory)
    seconds = time.perf_counter() - started
    peak = _status("VmHWM")
    if args.save:
        np.save(args.save, output)
    print(json.dumps({
        "size": args.size, "mode": args.mode, "seconds": seconds, "before": before, "peak": peak,
        "output_bytes": output.nbytes, "image_bytes": image.nbytes, "layout": layout.describe(),
        "tiles": layout.count, "estimate": layout.peak_bytes,
    }))


def _run(size: int, mode: str, memory: str, save: str | None) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--size", str(size), "--memory", memory]
    if save:
        command += ["--save", save]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{mode} {size}: failed\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256² and 512², 256 MiB budget")
    parser.add_argument("--sizes", type=int, nargs="+", help="image sizes (default 1024 2048 4096)")
    parser.add_argument("--memory", help="budget of one tiled pass (default 1GiB; quick: 256MiB)")
    parser.add_argument("--single-max", default="4GiB", help="run the single pass where its estimate is below this")
    parser.add_argument("--child", choices=["tiled", "single"], help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(argparse.Namespace(mode=args.child, size=args.size, memory=args.memory, save=args.save))
        return

    import numpy as np

    import unetgen
    from unetgen.planning.limits import parse_bytes

    sizes = args.sizes or ([256, 512] if args.quick else [1024, 2048, 4096])
    memory = args.memory or ("256MiB" if args.quick else "1GiB")
    spec = unetgen.preset("paper")
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}", file=sys.stderr)
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            tiled_out = os.path.join(folder, "tiled.npy")
            tiled = _run(size, "tiled", memory, tiled_out)
            print(f"{size}²: tiled {tiled['seconds']:.1f} s, {tiled['layout']}", file=sys.stderr)
            single = None
            same = unetgen.plan(spec.replace(output="same"), [size, size])
            needed = unetgen.estimate(unetgen.plan(spec, same.core_input_size)).peak_bytes
            error = None
            if needed <= parse_bytes(args.single_max):
                single_out = os.path.join(folder, "single.npy")
                single = _run(size, "single", memory, single_out)
                a, b = np.load(tiled_out), np.load(single_out)
                error = float(np.abs(a - b).max() / np.abs(b).max())
                print(f"{size}²: single {single['seconds']:.1f} s, max |tiled − single| / max |single| = "
                      f"{error:.1e}", file=sys.stderr)
        rows.append((size, tiled, single, needed, error))
    print(f"| image | tiles (input → output) | tiled: time | tiled: Mpx/s | tiled: peak RSS MiB (before → peak) "
          f"| tiled: peak − before − output MiB | single pass: estimate MiB | single: time | single: Mpx/s "
          f"| single: peak − before − output MiB | max \\|tiled − single\\| / max \\|single\\| |")
    print("|" + "---|" * 11)
    for size, tiled, single, needed, error in rows:
        pixels = size * size
        layout = tiled["layout"].split(",")[0]
        work = tiled["peak"] - tiled["before"] - tiled["output_bytes"]
        cells = [
            f"{size}²", layout, f"{tiled['seconds']:.0f} s", f"{pixels / tiled['seconds'] / 1e6:.3f}",
            f"{_mib(tiled['before'])} → {_mib(tiled['peak'])}", _mib(work), _mib(needed),
        ]
        if single is not None:
            single_work = single["peak"] - single["before"] - single["output_bytes"]
            cells += [f"{single['seconds']:.0f} s", f"{pixels / single['seconds'] / 1e6:.3f}", _mib(single_work),
                      f"{error:.1e}"]
        else:
            cells += ["not run (above --single-max)", "", "", ""]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
