"""The memory limit: refuse a network or a pass that cannot fit before allocating it."""

from __future__ import annotations

import math
import os

from ..errors import ResourceError
from ..text import human_bytes, size_text
from .cost import estimate
from .plan import Plan


_limit_override: int | None = None
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``"64GiB"``, ``"512 MB"``, ``"1.5t"`` or a plain number of bytes → bytes (``0`` means no limit).

    Raises:
        ResourceError: when the text is not a size.
    """
    from ..errors import ResourceError

    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if value < 0 or unit not in _UNITS or not math.isfinite(value):
        raise ResourceError(f"memory limit '{text}': not a size; write e.g. 64GiB, 512MiB or 0 for no limit")
    return int(value * _UNITS[unit])


def set_memory_limit(limit: int | str | None) -> None:
    """Set the memory unetgen lets one network or one pass take (bytes, a size like ``"64GiB"``, 0 for none).

    ``None`` restores the default: the ``UNETGEN_MAX_MEMORY`` environment variable if set, else the machine's
    physical memory.
    """
    global _limit_override
    _limit_override = parse_bytes(limit) if isinstance(limit, str) else limit


def memory_limit() -> int:
    """The memory limit in bytes (0: no limit). See :func:`set_memory_limit`."""
    if _limit_override is not None:
        return _limit_override
    env = os.environ.get("UNETGEN_MAX_MEMORY")
    if env:
        return parse_bytes(env)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not on Linux/macOS
        return 0


_OVERRIDE = "raise the limit with UNETGEN_MAX_MEMORY=<size> (0: none) or unetgen.set_memory_limit()"


def check_weights_fit(plan: Plan) -> None:
    """Refuse to allocate a network whose weights alone exceed the memory limit.

    Raises:
        ResourceError: with the estimate and how to override the limit.
    """
    from ..errors import ResourceError

    limit = memory_limit()
    needed = plan.parameters * 4
    if limit and needed > limit:
        raise ResourceError(
            f"{plan.spec.name}: {plan.parameters:,} parameters need {human_bytes(needed)} as float32, more than the "
            f"memory limit of {human_bytes(limit)}; reduce width, channels or depth, or {_OVERRIDE}"
        )


def check_pass_fits(plan: Plan, batch: int, bytes_per_value: int = 4) -> None:
    """Refuse a forward pass whose estimated peak memory exceeds the memory limit.

    Raises:
        ResourceError: with the estimate and how to override the limit.
    """
    from ..errors import ResourceError

    limit = memory_limit()
    if not limit:
        return
    cost = estimate(plan, batch=batch, bytes_per_value=bytes_per_value)
    if cost.peak_bytes > limit:
        shape = size_text(plan.input_shape)
        raise ResourceError(
            f"input {batch}×{shape}: one pass needs about {human_bytes(cost.peak_bytes)} "
            f"({human_bytes(cost.activation_bytes)} of activations), more than the memory limit of "
            f"{human_bytes(limit)}; use a smaller input or batch (tiled inference: unetgen.predict), or {_OVERRIDE}"
        )
