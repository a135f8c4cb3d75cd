"""Speed and memory of unetgen's networks against hand-written U-Nets and onnxruntime (CPU, float32, batch 1).

    python benchmarks/run.py               # every case below, 5 timed rounds (about 30 minutes on 2 quiet cores)
    python benchmarks/run.py --quick       # paper at 572², modern at 256², 3 timed rounds (a few minutes)
    python benchmarks/run.py --only paper  # the cases of one preset
    python benchmarks/run.py --json results.json

For each case (a preset at a size) it runs, side by side with the same weights:

* ``build`` — the module ``unetgen.build()`` returns, eager, under ``torch.inference_mode()``;
* ``optimize`` — ``unetgen.optimize()`` of it (batch norm folded, in-place activations, channels-last);
* ``optimize(winograd)`` — ``unetgen.optimize(winograd=True)``: the same, contiguous, with NNPACK's Winograd
  convolutions on large maps (2D only);
* ``onnxruntime`` — the file ``unetgen.export_onnx()`` writes, on onnxruntime's CPU provider;
* ``hand-written`` — the reference implementations in ``reference_unets.py`` (the paper's network; the popular
  same-padding + BatchNorm network), loaded with the same weights; their outputs must equal ``build``'s;
* ``hand-written, ReLU copies`` — the same, with ``nn.ReLU(inplace=False)`` as in unetgen's layers: a control that
  shows what the in-place activations of the hand-written code are worth (timed only).

Timing: one warm-up pass of each, then rounds in which each path runs once, in an order that rotates every round,
so that slow drifts of the machine hit every path alike. The machine is shared: before each timed pass the script
waits until the other processes have left the CPU idle for half a second (``/proc/stat``), and a pass during which
they took more than 10% of it is run again (at most 3 times; the table counts the passes that stayed contended).
Latency is the median of the rounds; GFLOP/s is the plan's FLOP count (``unetgen.estimate``, equal to torch's
FlopCounterMode) divided by it.

Memory: each path runs again in a fresh process, which warms it up on a small input, resets its peak resident
memory (``/proc/self/clear_refs``), reads its resident memory, makes the input and runs one pass. "Measured" is the
peak (``VmHWM``) less the memory before the input: every byte the pass touched — tensors, oneDNN's reorder
buffers and scratchpads, allocator slack — but not the weights, which are resident before. "Live tensors" is the
peak of the bytes of tensors alive at once, seen by a ``TorchDispatchMode`` in a second pass; the plan's estimate
(``Cost.activation_bytes``) models exactly that for ``build``'s eager pass.

Prints the machine and Markdown tables (the ones in benchmarks/README.md) and checks the targets of issue 6.
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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_status import status as _status  # noqa: E402

import unetgen  # noqa: E402
from reference_unets import ModernUNet, PaperUNet, modern_state_dict, paper_state_dict  # noqa: E402
from unetgen.network.measure import LiveBytes  # noqa: E402

#: The cores' nominal fp32 peak that issue 6 measures against: 2 cores × 2.45 GHz × 32 FLOP per cycle (two 256-bit
#: FMA pipes). Zen 4 boosts above its base clock, so a quiet machine can exceed it (see the sgemm line).
NOMINAL_PEAK_GFLOPS = 156.0
PATHS = ("build", "optimize", "optimize(winograd)", "onnxruntime", "hand-written", "hand-written, ReLU copies")
#: Timed, not measured for memory: a control that tells what in-place activations are worth.
CONTROLS = ("hand-written, ReLU copies",)
REFERENCES: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[Any], dict[str, torch.Tensor]]]] = {
    "paper": (PaperUNet, paper_state_dict),
    "modern": (ModernUNet, modern_state_dict),
}


@dataclass(frozen=True)
class Case:
    """A preset at an input size."""

    preset: str
    size: tuple[int, ...]
    quick: bool = False

    @property
    def label(self) -> str:
        return f"{self.preset} {'×'.join(map(str, self.size))}"

    @property
    def paths(self) -> tuple[str, ...]:
        paths = PATHS if self.preset in REFERENCES else tuple(p for p in PATHS if not p.startswith("hand-written"))
        return paths if len(self.size) == 2 else tuple(p for p in paths if p != "optimize(winograd)")


CASES = [
    Case("paper", (572, 572), quick=True),
    Case("modern", (256, 256), quick=True),
    Case("paper", (380, 380)),
    Case("paper", (764, 764)),
    Case("modern", (576, 576)),
    Case("cicek3d", (132, 132, 116)),
    Case("nnunet", (40, 224, 192)),
]


# --- a shared machine: time only what ran alone ------------------------------------------------------------------


def _busy_ticks() -> int:
    """Busy CPU ticks of the whole machine (steal included) since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return sum(values) - values[3] - values[4]


class Probe:
    """Wall time of a block, and the share of the machine's CPUs that other processes used meanwhile."""

    def __enter__(self) -> Probe:
        self._busy, self._own, self._start = _busy_ticks(), _own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._start
        busy = (_busy_ticks() - self._busy) / os.sysconf("SC_CLK_TCK")
        others = max(0.0, busy - (_own_cpu() - self._own))
        self.foreign = others / (self.wall * (os.cpu_count() or 1))


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def wait_until_quiet(limit: float = 0.05, interval: float = 0.25, max_wait: float = 120.0) -> bool:
    """Wait until other processes used at most ``limit`` of the CPUs for two intervals in a row."""
    started, quiet = time.perf_counter(), 0
    while time.perf_counter() - started < max_wait:
        with Probe() as probe:
            time.sleep(interval)
        quiet = quiet + 1 if probe.foreign <= limit else 0
        if quiet >= 2:
            return True
    return False


def timed(run: Callable[[], object], retries: int = 3, limit: float = 0.10) -> tuple[float, bool]:
    """One pass's wall time, run when the machine is quiet; whether other processes still took > ``limit``."""
    for _ in range(retries + 1):
        wait_until_quiet()
        with Probe() as probe:
            run()
        if probe.foreign <= limit:
            return probe.wall, False
    return probe.wall, True


# --- the machine -------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "onednn": torch.backends.mkldnn.is_available(), "load_average": os.getloadavg(),
    }


def sgemm_gflops(threads: int) -> float:
    """Best of 5 float32 2048² matrix products (MKL): what the cores sustain on the densest kernel there is."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(timed(lambda: a @ b)[0] for _ in range(5))
    return 2 * 2048**3 / best / 1e9


# --- the paths ---------------------------------------------------------------------------------------------------


def _perturb_batch_norms(model: torch.nn.Module, seed: int) -> None:
    """Give every batch norm statistics and an affine transform of a trained network, so folding is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def make_paths(
    case: Case, onnx_file: Path | None, threads: int, only: str | None = None
) -> dict[str, Callable[[Any], Any]]:
    """Callables ``input → output`` for each path of ``case`` (or only ``only``), all with the same weights."""
    wanted = [only] if only else list(case.paths)
    spec = unetgen.preset(case.preset)
    model = unetgen.build(spec, case.size, seed=0).eval()
    _perturb_batch_norms(model, seed=1)
    runs: dict[str, Callable[[Any], Any]] = {}
    for path in ("hand-written", "hand-written, ReLU copies"):
        if path not in wanted:
            continue
        make, rename = REFERENCES[case.preset]
        reference = make().eval()
        # the reference's own modules with unetgen's weights, through the key mapping read the other way round
        inverse = dict(zip(rename(reference), reference.state_dict()))
        reference.load_state_dict({inverse[key]: value for key, value in model.state_dict().items()})
        if path.endswith("copies"):  # as unetgen's layers do: each ReLU writes a new map
            for module in reference.modules():
                if isinstance(module, torch.nn.ReLU):
                    module.inplace = False
        runs[path] = reference
    if "optimize" in wanted:
        runs["optimize"] = unetgen.optimize(model)
    if "optimize(winograd)" in wanted:
        runs["optimize(winograd)"] = unetgen.optimize(model, winograd=True)
    if "onnxruntime" in wanted and onnx_file is not None:
        session = unetgen.onnx_session(onnx_file, threads=threads)
        runs["onnxruntime"] = lambda x: torch.from_numpy(session.run(x.numpy()))
    if "build" in wanted:
        runs["build"] = model
    else:
        del model
    return {path: runs[path] for path in case.paths if path in runs}


def export(case: Case, folder: Path) -> tuple[Path, float]:
    """Export ``case``'s network (the same seeded weights as :func:`make_paths`) with ``unetgen.export_onnx``."""
    model = unetgen.build(unetgen.preset(case.preset), case.size, seed=0).eval()
    _perturb_batch_norms(model, seed=1)
    path = folder / f"{case.preset}_{'x'.join(map(str, case.size))}.onnx"
    started = time.perf_counter()
    unetgen.export_onnx(model, path, input_size=case.size, verify=False)
    return path, time.perf_counter() - started


# --- speed -------------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One path of one case."""

    seconds: list[float] = field(default_factory=list)
    contended: int = 0
    error: float = 0.0  # max |output − build's output| / max |build's output|

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_case(case: Case, onnx_file: Path | None, rounds: int, threads: int) -> dict[str, Timing]:
    """Check that every path computes ``build``'s function, then time them in rotating order."""
    paths = make_paths(case, onnx_file, threads)
    spec = unetgen.preset(case.preset)
    x = torch.randn(1, spec.in_channels, *case.size, generator=torch.Generator().manual_seed(2))
    results = {path: Timing() for path in paths}
    with torch.inference_mode():
        expected = paths["build"](x)
        scale = float(expected.abs().max())
        for path, run in paths.items():  # also the warm-up pass
            got = run(x)
            if got.shape != expected.shape:
                raise SystemExit(f"{case.label}: {path} gives {tuple(got.shape)}, build {tuple(expected.shape)}")
            results[path].error = float((got - expected).abs().max()) / scale
        order = list(paths)
        for round_ in range(rounds):
            for path in order[round_ % len(order):] + order[: round_ % len(order)]:
                seconds, contended = timed(lambda: paths[path](x))
                results[path].seconds.append(seconds)
                results[path].contended += contended
            print(f"  {case.label}: round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
    return results


# --- memory ------------------------------------------------------------------------------------------------------




def memory_child(job: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: one pass of one path; its peak resident memory above the memory before the input."""
    torch.set_num_threads(job["threads"])
    case = Case(job["preset"], tuple(job["size"]))
    onnx_file = Path(job["onnx"]) if job.get("onnx") else None
    run = make_paths(case, onnx_file, job["threads"], only=job["path"])[job["path"]]
    spec = unetgen.preset(case.preset)
    small = tuple(grid.first if spec.output == "crop" else 64 for grid in unetgen.make_plan(spec, case.size).lattices)
    with torch.inference_mode():
        run(torch.randn(1, spec.in_channels, *small))  # load libraries and kernels
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak := current
        reset = True
    except OSError:
        reset = False
    before = _status("VmRSS")
    with torch.inference_mode():
        x = torch.randn(1, spec.in_channels, *case.size)
        y = run(x)
    peak = _status("VmHWM")
    del y
    live = None
    if job["path"] != "onnxruntime":
        mode = LiveBytes()
        with torch.inference_mode():
            mode.track(x)
            with mode:
                run(x)
        live = mode.peak
    return {"measured": peak - before, "live": live, "reset": reset, "before": before}


#: glibc's malloc keeps freed heap memory (allocations under its dynamic mmap threshold, up to 32 MiB) resident
#: for reuse, so a process's peak RSS includes memory no tensor holds any more. With this setting every allocation
#: of 1 MiB or more is its own mapping, returned to the system when freed: the peak RSS is then what is really
#: alive at once. The benchmark measures the paper network both ways.
EAGER_RELEASE = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}
EAGER_RELEASE_LABEL = " [MALLOC_MMAP_THRESHOLD_=1MiB]"


def measure_memory(
    case: Case, path: str, onnx_file: Path | None, threads: int, repeats: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run :func:`memory_child` in ``repeats`` fresh interpreters (with ``env`` added to the environment); the
    median and range of what they measured."""
    job = {"preset": case.preset, "size": list(case.size), "path": path, "threads": threads,
           "onnx": str(onnx_file) if onnx_file else None}
    rows = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, __file__, "--memory-child", json.dumps(job)], capture_output=True, text=True, check=False,
            env={**os.environ, **(env or {})},
        )
        if done.returncode != 0:
            raise SystemExit(f"memory measurement of {case.label} / {path} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    measured = [row["measured"] for row in rows]
    return {"measured": statistics.median(measured), "low": min(measured), "high": max(measured),
            "live": rows[0]["live"], "runs": rows}


# --- report ------------------------------------------------------------------------------------------------------


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f}"


def report(info: dict[str, Any], results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Markdown: machine, speed table, memory table, targets."""
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; {info['os']}; Python "
        f"{info['python']}; torch {info['torch']} (oneDNN), onnxruntime {info['onnxruntime']}; float32, batch 1; "
        f"{args.threads} threads (`torch.set_num_threads({args.threads})`, onnxruntime `intra_op_num_threads="
        f"{args.threads}`). MKL sgemm 2048² reaches {results['sgemm']:.0f} GFLOP/s on these cores; the nominal peak "
        f"is {NOMINAL_PEAK_GFLOPS:.0f} GFLOP/s. Load average at the start: "
        f"{', '.join(f'{v:.2f}' for v in info['load_average'])}.",
        "",
        f"Command: `python benchmarks/run.py{' --quick' if args.quick else ''}"
        f"{''.join(' --only ' + o for o in args.only or [])}` — {args.rounds} timed rounds after one warm-up pass; "
        f"memory: {args.memory_repeats} fresh process{'es' if args.memory_repeats > 1 else ''} per figure.",
        "",
        "| case | path | latency: median (min–max) | GFLOP/s | % of nominal peak | × hand-written (time ratio) | "
        "max \\|Δ\\| / max \\|y\\| vs build |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, case_result in results["cases"].items():
        timings = case_result["timings"]
        gflop = case_result["flops"] / 1e9
        reference = timings.get("hand-written")
        for path, timing in timings.items():
            med = statistics.median(timing["seconds"])
            ratio = f"{med / statistics.median(reference['seconds']):.2f}" if reference else "—"
            spread = f"{med * 1e3:,.0f} ms ({min(timing['seconds']) * 1e3:,.0f}–{max(timing['seconds']) * 1e3:,.0f})"
            if timing["contended"]:
                spread += f" [{timing['contended']} contended]"
            lines.append(
                f"| {label} ({gflop:.0f} GFLOP) | {path} | {spread} | {gflop / med:.0f} | "
                f"{100 * gflop / med / NOMINAL_PEAK_GFLOPS:.0f}% | {ratio} | {timing['error']:.1e} |"
            )
    if results["memory"]:
        lines += [
            "",
            "| case | path | plan's estimate: activations (MiB) | live tensors, peak (MiB) | measured: peak RSS − "
            "RSS before the input, MiB: median (min–max) | measured / estimate | weights (MiB, resident before) |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, rows in results["memory"].items():
            estimate = results["cases"][label]["activation_bytes"]
            weights = results["cases"][label]["parameter_bytes"]
            for path, row in rows.items():
                live = _mib(row["live"]) if row["live"] is not None else "—"
                lines.append(
                    f"| {label} | {path} | {_mib(estimate)} | {live} | {_mib(row['measured'])} "
                    f"({_mib(row['low'])}–{_mib(row['high'])}) | "
                    f"{row['measured'] / estimate:.2f} | {_mib(weights)} |"
                )
    lines += ["", "Targets:", ""] + [f"- {line}" for line in targets(results)]
    return lines


def targets(results: dict[str, Any]) -> list[str]:
    """The targets of issue 6, each with its figures."""
    out = []
    cases = results["cases"]

    def median(label: str, path: str) -> float | None:
        timing = cases.get(label, {}).get("timings", {}).get(path)
        return statistics.median(timing["seconds"]) if timing else None

    ratios = {}
    for label in cases:
        built, hand = median(label, "build"), median(label, "hand-written")
        if built and hand:
            ratios[label] = built / hand
    if ratios:
        verdict = "reached" if max(ratios.values()) <= 1.0 else "missed"
        words = "; ".join(f"{label}: {r:.2f}" for label, r in ratios.items())
        out.append(f"`build()` time / hand-written time ≤ 1.0 — **{verdict}**: {words}.")
        controls = []
        for label in ratios:
            built, copies = median(label, "build"), median(label, "hand-written, ReLU copies")
            if built and copies:
                controls.append(f"{label}: {built / copies:.2f}")
        if controls:
            out.append(
                "(control) `build()` time / time of the hand-written network with ReLUs that write new maps, as "
                f"unetgen's do: {'; '.join(controls)}."
            )
    paper = "paper 572×572"
    for path in ("optimize", "optimize(winograd)"):
        fast = median(paper, path)
        if fast:
            gflops = cases[paper]["flops"] / 1e9 / fast
            verdict = "reached" if gflops >= 0.75 * NOMINAL_PEAK_GFLOPS else "missed"
            note = " (effective: Winograd does fewer FLOPs)" if "winograd" in path else ""
            out.append(
                f"`{path}` on the paper network at 572² ≥ 75% of the nominal peak "
                f"({0.75 * NOMINAL_PEAK_GFLOPS:.0f} GFLOP/s) — **{verdict}**: {gflops:.0f} GFLOP/s = "
                f"{100 * gflops / NOMINAL_PEAK_GFLOPS:.0f}%{note}."
            )
    for path in ("optimize", "optimize(winograd)"):
        speedups = []
        for label in cases:
            fast, hand = median(label, path), median(label, "hand-written")
            if label.startswith("modern") and fast and hand:
                speedups.append((label, hand / fast))
        if speedups:
            verdict = "reached" if min(s for _, s in speedups) >= 1.3 else "missed"
            words = "; ".join(f"{label}: {s:.2f}×" for label, s in speedups)
            out.append(
                f"`{path}` ≥ 1.3× faster than the hand-written same-padding + BN U-Net — **{verdict}**: {words}."
            )
    memory = results["memory"].get(paper, {})
    if memory:
        estimate = cases[paper]["activation_bytes"]
        for path, row in memory.items():
            if path.endswith(EAGER_RELEASE_LABEL):
                continue
            ratio = row["measured"] / estimate
            verdict = "reached" if ratio <= 1.2 else "missed"
            out.append(
                f"peak memory of one paper pass at 572², `{path}`: ≤ 1.2× the plan's estimate "
                f"({_mib(estimate)} MiB) — **{verdict}**: {_mib(row['measured'])} MiB = {ratio:.2f}× "
                f"(fresh processes: {_mib(row['low'])}–{_mib(row['high'])} MiB)."
            )
        released = [f"`{path}`: {_mib(row['measured'])} MiB = {row['measured'] / estimate:.2f}×"
                    for path, row in memory.items() if path.endswith(EAGER_RELEASE_LABEL)]
        if released:
            out.append(
                "(diagnostic) the same with freed memory returned to the system at once, so that the peak RSS counts "
                f"only what is alive: {'; '.join(released)}."
            )
    return out


# --- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="paper 572² and modern 256², 3 rounds")
    parser.add_argument("--only", action="append", metavar="PRESET", help="only the cases of this preset")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 5; 3 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and onnxruntime (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurements")
    parser.add_argument("--memory-repeats", type=int, help="fresh processes per memory figure (default 3; 1 quick)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.memory_repeats = args.memory_repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    cases = [c for c in CASES if (c.quick or not args.quick) and (not args.only or c.preset in args.only)]
    info = machine()
    results: dict[str, Any] = {"machine": info, "sgemm": sgemm_gflops(args.threads), "cases": {}, "memory": {}}
    with tempfile.TemporaryDirectory() as folder:
        for case in cases:
            print(f"{case.label}: exporting to ONNX", file=sys.stderr, flush=True)
            onnx_file, export_seconds = export(case, Path(folder))
            cost = unetgen.estimate(unetgen.make_plan(unetgen.preset(case.preset), case.size))
            timings = time_case(case, onnx_file, args.rounds, args.threads)
            results["cases"][case.label] = {
                "flops": cost.flops, "activation_bytes": cost.activation_bytes,
                "parameter_bytes": cost.parameter_bytes, "export_seconds": export_seconds,
                "timings": {p: {"seconds": t.seconds, "contended": t.contended, "error": t.error}
                            for p, t in timings.items()},
            }
            if not args.no_memory and (case.quick or not args.quick):
                results["memory"][case.label] = {}
                for path in (p for p in case.paths if p not in CONTROLS):
                    print(f"  {case.label}: memory of {path}", file=sys.stderr, flush=True)
                    results["memory"][case.label][path] = measure_memory(
                        case, path, onnx_file, args.threads, args.memory_repeats
                    )
                if case.preset == "paper":  # the same, with freed memory returned to the system at once
                    for path in ("build", "optimize"):
                        print(f"  {case.label}: memory of {path}{EAGER_RELEASE_LABEL}", file=sys.stderr, flush=True)
                        results["memory"][case.label][path + EAGER_RELEASE_LABEL] = measure_memory(
                            case, path, onnx_file, args.threads, args.memory_repeats, env=EAGER_RELEASE
                        )
    results["machine"]["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print("\n".join(report(info, results, args)))


if __name__ == "__main__":
    main()
