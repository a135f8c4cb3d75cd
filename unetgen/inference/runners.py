"""The network ``predict`` runs tiles through: a torch module or an exported ONNX file, opened from what a user has.

A runner takes a batch of tiles (numpy float32) and returns the network's outputs for them. A torch network runs
its core (:meth:`unetgen.UNet.core`) on tiles that ``predict`` mirrors itself, so an ``output: same`` network tiles
as an ``output: crop`` one does; an ONNX file holds the whole network, and an ``output: same`` file mirrors each
tile it is given (see :func:`unetgen.inference.tiling.plan_tiles`, ``whole``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import SpecError, UNetGenError
from ..export.reader import OnnxSession, onnx_session
from ..network.checkpoint import load_weights
from ..network.optimization import PRECISIONS, optimize, slow_precision
from ..network.unet import UNet
from ..planning.limits import check_pass_fits
from ..planning.plan import Plan
from ..spec.fields import UNetSpec, load_spec
from ..text import human_bytes

log = logging.getLogger(__name__)


class Runner:
    """Runs batches of tiles through a network: ``runner(batch) → outputs``, numpy float32 in and out.

    Attributes:
        spec: the network's spec.
        source: what the network was loaded from, for messages.
        fixed: ``(batch, tile size)`` when the network only takes one shape (a static ONNX file), else None.
        whole: whether it runs the whole network, which mirrors each tile itself when the network has
            ``output: same`` (an ONNX file); False: it runs what it is given, as the core does.
        intensity: the intensity normalisation the network was trained with (:mod:`unetgen.training.intensity`'s
            dict form), or None for raw values.
    """

    spec: UNetSpec
    source: str
    fixed: tuple[int, tuple[int, ...]] | None = None
    whole: bool = False
    intensity: dict[str, Any] | None = None
    precision: str = "fp32"  # what it runs in, for messages: fp32 (or the network's own), bf16, fp16, int8

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def set_precision(self, precision: str) -> None:
        """Run in ``precision`` (``fp32``, ``bf16``, ``fp16``), where the network can.

        Raises:
            UNetGenError: for an unknown precision, or one this network cannot switch to.
        """
        if precision not in _PRECISION_NAMES:
            raise UNetGenError(f"precision {precision!r}: give one of {', '.join(_PRECISION_NAMES)}")

    def check(self, shape: tuple[int, ...], plan: Plan) -> None:
        """Raise a clear error, before any work, if the network cannot take a batch of ``shape``.

        Args:
            shape: ``(batch, channels, *tile size)``.
            plan: the plan of what runs on one tile (the layout's plan).
        """

    @contextmanager
    def running(self, spare: int = 0) -> Iterator[Runner]:
        """Prepare for a run (eval mode) and restore the network afterwards.

        Args:
            spare: bytes of the memory budget a pass leaves unused, which the runner may spend on running faster.
        """
        yield self


class TorchRunner(Runner):
    """A built network (:func:`unetgen.build`, :func:`unetgen.load`): its core, run in eval mode without gradients.

    Where the memory budget has room for a second set of weights beside a pass, tiles go through the core of
    :func:`unetgen.optimize`'s copy of the network (batch norm folded, channels-last maps where exact enough): the
    same outputs within float32 rounding, and faster (``benchmarks/``). Otherwise they go through the network's own.
    """

    def __init__(self, model: UNet, source: str = "model") -> None:
        """Args:
        model: a :class:`~unetgen.network.UNet`.
        source: what to call it in messages.
        """
        self.model = model
        self.spec = model.spec
        self.source = source
        self.intensity = getattr(model, "intensity", None)
        first = next(model.parameters(), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.core: Any = None  # the core that runs tiles, while running()
        self.dtype: torch.dtype | None = None  # a lower precision to run in (None: the network's own)
        self.attention: Any = None  # the gates' captured maps and indices, while attending()

    def set_precision(self, precision: str) -> None:
        """Run tiles in ``precision`` through :func:`unetgen.optimize`'s copy; where the device has no fast path
        for it, run float32 and say why in one log line."""
        super().set_precision(precision)
        reason = slow_precision(precision, self.device)
        if reason is not None:
            log.warning("%s: %s would run slower than fp32 here (%s): running fp32", self.source, precision, reason)
            precision = "fp32"
        self.dtype = _PRECISION_NAMES[precision]
        self.precision = precision

    @property
    def weight_bytes(self) -> int:
        """Bytes of the network's parameters: what :func:`unetgen.optimize`'s copy adds to a pass, at most."""
        size = self.dtype.itemsize if self.dtype is not None else None
        return sum(p.numel() * (size or p.element_size()) for p in self.model.parameters())

    @contextmanager
    def running(self, spare: int = 0) -> Iterator[Runner]:
        was_training = self.model.training
        self.model.eval()  # dropout off, batch norm on its running statistics
        if self.weight_bytes <= spare:
            fast = optimize(self.model, dtype=self.dtype)
            self.core = fast.core()
            log.info("%s: running unetgen.optimize's copy (%s)", self.source, ", ".join(fast.optimizations))
        else:
            self.core = self.model.core()
            log.info(
                "%s: running the network as it is: optimize's copy (%s of weights) does not fit the memory budget "
                "beside a pass", self.source, human_bytes(self.weight_bytes),
            )
        try:
            with torch.inference_mode():
                yield self
        finally:
            self.core = None
            self.model.train(was_training)

    def check(self, shape: tuple[int, ...], plan: Plan) -> None:
        if self.device.type == "cpu":  # the memory limit is about this machine's memory
            check_pass_fits(plan, batch=shape[0])

    @contextmanager
    def attending(self, gates: dict[str, tuple[tuple[int, ...], ...]]) -> Iterator[None]:
        """While the block runs (inside :meth:`running`), each call returns the attention gates' maps too, as
        channels after the network's: gate ``key``'s map indexed by ``gates[key]`` per axis (the gate pixel each
        output pixel shows; :func:`unetgen.planning.field.nearest_on_output`)."""
        unet = self.core.unet
        with unet.capturing_attention() as maps:
            self.attention = (maps, {key: [torch.as_tensor(index, device=self.device) for index in per_axis]
                                     for key, per_axis in gates.items()})
            try:
                yield
            finally:
                self.attention = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        out = self.core(x).float()
        if self.attention is not None:
            maps, indices = self.attention
            parts = [out]
            for key, per_axis in indices.items():
                shown = maps[key].float()
                for axis, index in enumerate(per_axis):
                    shown = shown.index_select(2 + axis, index)
                parts.append(shown)
            out = torch.cat(parts, 1)
        return out.cpu().numpy()


class OnnxRunner(Runner):
    """An ONNX file exported by unetgen, run by onnxruntime through :func:`unetgen.onnx_session` (which reads the
    spec and the size rules from the file's metadata and checks every shape).

    The file holds the whole network: an ``output: same`` file mirrors each tile itself, so its tiles are laid out
    as before ``predict`` ran cores (any size, each giving up its border and the step's rounding at inner edges).
    """

    whole = True

    def __init__(self, source: str | Path | OnnxSession) -> None:
        """Args:
        source: the ``.onnx`` file, or a session from :func:`unetgen.onnx_session`.

        Raises:
            ExportError: when the file cannot be read, or was not exported by unetgen.
        """
        self.session = source if isinstance(source, OnnxSession) else onnx_session(source)
        info = self.session.info
        self.spec = info.spec
        self.source = str(info.path)
        self.intensity = info.intensity
        self.precision = info.precision
        if info.static:
            self.fixed = (int(info.batch), tuple(info.export_size))

    def check(self, shape: tuple[int, ...], plan: Plan) -> None:
        self.session.check(shape)

    def set_precision(self, precision: str) -> None:
        """An ONNX file runs at the precision it was exported at: refuse another."""
        super().set_precision(precision)
        own = self.session.info.precision
        if precision != own:
            raise UNetGenError(
                f"{self.source}: precision {precision}: an ONNX file runs at the precision it was exported at "
                f"({own}); give a torch checkpoint to run it in another, or export another file (unetgen export "
                "--quantize int8 / --precision fp16)"
            )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(batch), dtype=np.float32)


def load_model(source: Any, spec: UNetSpec | str | None = None, precision: str | None = None) -> Runner:
    """Open a network to predict with.

    Args:
        source: a built network (:func:`unetgen.build`); a unetgen checkpoint (:func:`unetgen.save`,
            ``unetgen build --save``); a file of weights alone (``torch.save(model.state_dict(), path)``), which
            needs ``spec``; or an ONNX file exported by unetgen (``.onnx``).
        spec: the network's spec (a spec, preset name or YAML path). Needed for a file of weights alone; for a
            checkpoint or an ONNX file, which hold their spec, it must describe the same network.
        precision: ``fp32``, ``bf16`` or ``fp16``: the precision a torch network runs in (see
            :meth:`Runner.set_precision`); default: the network's own.

    Returns:
        A :class:`Runner`.

    Raises:
        CheckpointError: when the weights cannot be read or do not match the spec.
        ExportError: when the ONNX file cannot be read.
        SpecError: when ``spec`` is not valid, or differs from the file's.
    """
    if isinstance(source, Runner):
        runner = source
    elif isinstance(source, OnnxSession):
        runner = OnnxRunner(source)
    elif isinstance(source, UNet):
        runner = TorchRunner(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() == ".onnx":
            runner = OnnxRunner(path)
        else:
            runner = TorchRunner(load_weights(path, spec), str(path))
    else:
        raise UNetGenError(
            f"model: got {type(source).__name__}; give a network from unetgen.build or unetgen.load, a checkpoint "
            "file or an .onnx file"
        )
    if spec is not None:
        _check_same_network(load_spec(spec), runner)
    if precision is not None:
        runner.set_precision(precision)
    return runner


def _check_same_network(spec: UNetSpec, runner: Runner) -> None:
    """Refuse a spec that describes another network than the runner's (names and sizes aside)."""
    ignore = {"name", "description", "input_size"}
    mine = spec.model_dump(exclude=ignore)
    theirs = runner.spec.model_dump(exclude=ignore)
    if mine != theirs:
        fields = [key for key in mine if mine[key] != theirs.get(key)]
        shown = ", ".join(f"{key}: {theirs.get(key)!r} in the file, {mine[key]!r} in the spec" for key in fields[:3])
        raise SpecError(f"{runner.source}: holds another network than the spec '{spec.name}' ({shown})")


#: ``predict``'s precisions and the dtypes they run in.
_PRECISION_NAMES: dict[str, torch.dtype] = {name: dtype for dtype, name in PRECISIONS.items()}

__all__ = ["Runner", "TorchRunner", "OnnxRunner", "load_model"]
