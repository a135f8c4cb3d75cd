"""What this CPU can run fast: its instruction sets, read from ``/proc/cpuinfo``, and the precisions they speed up.

Lower precision is only faster where the CPU has instructions for it; elsewhere the library converts every value
back to float32 and runs slower than float32 itself. One function reads the flags (:func:`cpu_flags`; tests
replace it), and :func:`missing_instructions` names what a precision lacks on this CPU, so the message can say
which instruction is missing:

* **bfloat16** (torch, oneDNN): AMX's tile instructions (``amx_bf16``) or AVX-512's BF16 dot products
  (``avx512_bf16``); 64-bit ARM: the ``bf16`` feature.
* **float16** (torch, oneDNN): AMX's float16 tiles (``amx_fp16``). ``avx512_fp16`` alone is not enough: oneDNN's
  float16 convolutions ran no faster than float32 on such a CPU (torch 2.13, ``benchmarks/precision.py``).
* **int8** (onnxruntime): VNNI's 8-bit dot products (``avx512_vnni``, ``avx_vnni``, or AMX's ``amx_int8``).
  Without them onnxruntime's AVX2 kernels multiply u8×s8 pairs into 16-bit sums that can saturate, which is why
  :mod:`unetgen.export.quantize` then keeps weights to 7 bits (``reduce_range``); 64-bit ARM: ``asimddp``.

The allocator matters to memory budgets: :func:`return_freed_memory` makes glibc hand freed blocks of 1 MiB or
more back at once (``unetgen train`` calls it on the CPU), so a training step's resident memory is its live tensors
plus oneDNN's share, and the planner's CPU budget (:data:`unetgen.planning.budget.TRAINING_OVERHEAD`) holds.

No torch here: the ONNX side asks too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from functools import lru_cache
from pathlib import Path

#: Where Linux lists the CPU's flags.
CPUINFO = Path("/proc/cpuinfo")

#: Per precision: the flags any one of which gives it a fast path, on x86 and on 64-bit ARM.
FAST_PATHS: dict[str, tuple[str, ...]] = {
    "bf16": ("amx_bf16", "avx512_bf16", "bf16"),
    "fp16": ("amx_fp16",),
    "int8": ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp"),
}
#: How a precision's instructions are named in messages (the x86 flags; ARM's are named when on ARM).
_X86 = {"bf16": ("avx512_bf16", "amx_bf16"), "fp16": ("amx_fp16",), "int8": ("avx512_vnni", "avx_vnni")}
_ARM = {"bf16": ("bf16",), "fp16": (), "int8": ("asimddp",)}


@lru_cache(maxsize=1)
def _read_cpuinfo() -> tuple[str, tuple[str, ...]] | None:
    """The model name and flags (in their order) of the first processor in ``/proc/cpuinfo``; None where there is
    no such file."""
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    model: str = ""
    flags: tuple[str, ...] = ()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 says flags, ARM features
            flags = tuple(value.split())
        if not line.strip() and flags:  # the first processor's block has ended
            break
    return model, flags


def cpu_flags() -> frozenset[str] | None:
    """The CPU's instruction-set flags (``avx512_bf16``, ``amx_int8``, ...), or None where they cannot be read
    (not Linux)."""
    info = _read_cpuinfo()
    return None if info is None else frozenset(info[1])


def cpu_model() -> str:
    """The CPU's model name, as ``/proc/cpuinfo`` gives it (else the platform's processor string)."""
    info = _read_cpuinfo()
    return (info[0] if info is not None and info[0] else platform.processor()) or "unknown CPU"


def missing_instructions(precision: str) -> str | None:
    """Why ``precision`` has no fast path on this CPU, in words; None when it has one (or the flags are unknown).

    Args:
        precision: ``bf16``, ``fp16`` or ``int8``.

    Returns:
        E.g. ``"this CPU lacks avx512_bf16 and amx_bf16"``, or None.

    Raises:
        ValueError: for another precision (a bug in the caller).
    """
    if precision not in FAST_PATHS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(FAST_PATHS)}")
    flags = cpu_flags()
    if flags is None:
        return None  # nothing to go by: leave the choice to the user
    if any(flag in flags for flag in FAST_PATHS[precision]):
        return None
    names = (_ARM if "asimd" in flags else _X86)[precision]
    if not names:
        return f"this CPU ({platform.machine()}) has no {precision} instructions that oneDNN uses"
    return "this CPU lacks " + " and ".join(names)


def instruction_sets() -> list[str]:
    """The CPU flags that matter for inference speed, as listed for benchmark tables (AVX, AVX-512, AMX, VNNI,
    BF16, FP16, FMA, ARM's SIMD), in the order ``/proc/cpuinfo`` gives them."""
    info = _read_cpuinfo()
    if info is None:
        return []
    keep = ("avx", "amx", "vnni", "bf16", "fp16", "fma", "asimd", "sve")
    return [flag for flag in info[1] if any(word in flag for word in keep)]


#: glibc's ``mallopt`` parameter for the mmap threshold (``M_MMAP_THRESHOLD`` in ``malloc.h``).
_M_MMAP_THRESHOLD = -3
#: Blocks of this size or more get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 2**20


@lru_cache(maxsize=1)
def return_freed_memory() -> bool:
    """Make glibc's allocator return freed blocks of 1 MiB or more to the system at once, for this process.

    By default glibc serves blocks below a *dynamic* mmap threshold (it rises up to 32 MiB as large blocks are
    freed) from its heap, where freed blocks stay resident and fragment: a planned 2D training step used 1.39× its
    estimate in resident memory that way, 1.02× with this setting (``benchmarks/README.md``, the planner). Setting
    the threshold once fixes it at 1 MiB (as ``MALLOC_MMAP_THRESHOLD_=1048576`` would); the price is a fresh
    mapping, zeroed by the kernel, for each large block.

    Returns:
        Whether the setting took (False off glibc, e.g. on macOS or musl, where nothing changes).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


__all__ = ["CPUINFO", "FAST_PATHS", "MMAP_THRESHOLD", "cpu_flags", "cpu_model", "missing_instructions",
           "instruction_sets", "return_freed_memory"]
