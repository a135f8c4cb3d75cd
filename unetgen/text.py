"""How unetgen writes sizes, axes and byte counts in messages and tables: one formatter each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The names of the spatial axes in messages, by ``spatial_dims``.
AXIS_NAMES: dict[int, tuple[str, ...]] = {1: ("length",), 2: ("height", "width"), 3: ("axis 0", "axis 1", "axis 2")}
#: One letter per spatial axis for table headers (``C×H×W``), by ``spatial_dims``.
AXIS_LETTERS: dict[int, tuple[str, ...]] = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def size_text(size: Sequence[Any]) -> str:
    """``(572, 572)`` → ``572×572``: how every size and shape is written."""
    return "×".join(str(int(s)) if isinstance(s, int) else str(s) for s in size)


def axis_names(dims: int) -> tuple[str, ...]:
    """The names of the spatial axes of a ``dims``-D network (``height``, ``width``)."""
    return AXIS_NAMES[dims]


def human_bytes(nbytes: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} PiB"
