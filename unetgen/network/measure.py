"""Measuring a pass: the peak of the bytes of tensors alive at once, the figure :func:`unetgen.estimate` predicts.

The tests check the estimate against it exactly, and ``benchmarks/run.py`` reports it beside the process's peak
resident memory (which adds the allocator's and oneDNN's overhead).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LiveBytes(TorchDispatchMode):
    """A dispatch mode that tracks the bytes of the tensor storages alive at once during the ops it sees.

    ``with LiveBytes() as mode: model(x)`` then ``mode.peak``. Storages are counted once each, from the op that
    returns them until they are freed; call :meth:`track` first for tensors made before the mode (the input).

    Attributes:
        live: bytes alive now.
        peak: the most bytes alive at once so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.seen: set[int] = set()

    def track(self, tensor: torch.Tensor) -> None:
        """Count ``tensor``'s storage (once) until it is freed."""
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.seen or storage.nbytes() == 0:
            return
        self.seen.add(key)
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)

        def gone(key: int = key, nbytes: int = storage.nbytes()) -> None:
            self.seen.discard(key)
            self.live -= nbytes

        weakref.finalize(storage, gone)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.track(tensor)
        return out
