"""Plan → the memory of one training step: weights, gradients, optimizer state, what autograd keeps for the
backward pass and the backward pass's own peak, replayed layer by layer from the plan. Pure integers.

One step is what a training loop does after its first iteration: ``zero_grad(set_to_none=True)``, the forward pass
in training mode (under autocast for ``bf16`` and ``fp16``), the loss, ``backward()``, ``optimizer.step()``. The
optimizer's state exists already; the weights' gradients do not until the backward pass makes them. The loss is
cross-entropy over the channels against integer class targets, one per output (with deep supervision every head,
its target at the head's size), summed with weights; the input and the targets are the caller's and count as they
do in :func:`unetgen.estimate` (the input is alive throughout).

The replay follows what eager PyTorch does, with one rule per layer kind (:data:`RULES`):

* **Forward.** Each layer writes its output (unless it works in place or is a view), and autograd saves what its
  backward formula needs: a convolution (and a transposed one) its input; an in-place ReLU, leaky ReLU or ELU its
  output (the same storage); an in-place SiLU a copy of its input; GELU and PReLU their input; max-pooling its input
  and the indices (int64); average pooling its input; a norm its input and its statistics (an instance norm also
  its weight repeated per sample); dropout its mask (a float tensor on the CPU, bool on CUDA); reflection and
  replication pads their input; sigmoid and softmax their output; the loss its log-probabilities. Concatenation,
  addition, up-sampling, constant padding and crops (views) save nothing. Python keeps a layer's output until the
  last layer that reads or holds it (:attr:`~unetgen.planning.plan.Layer.holds`), the outputs until the loss is
  computed; a storage is freed when neither Python nor a saved slot refers to it.
* **Backward.** Nodes run in the reverse of the order they were made (the autograd engine's ready queue is ordered
  by sequence number, and the last node made is always ready). A node writes the gradients of its inputs — a new
  tensor for most kinds; views of its gradient for a concatenation; the gradient itself, to both inputs, for an
  addition; a zero-filled tensor of the input's size for each axis a crop narrows — and its weights' gradients
  (kept as ``.grad``); then its incoming gradient and its saved tensors are dropped, and what it wrote is handed on.
  Two gradients of one tensor (a skip connection's, a residual block's input) are summed in place when the first is
  a dense tensor nothing else refers to, else into a new tensor. (While a ``TorchDispatchMode`` is active, as when
  :class:`unetgen.network.measure.LiveBytes` measures a step, autograd treats every tensor as a subclass and always
  sums into a new tensor: ``metered=True`` replays that.)
* **Autocast** (``bf16``/``fp16``). Convolutions, transposed convolutions and PReLU run in the low precision: an
  fp32 input is cast (the cast is what is saved) and the weights are cast once per forward pass (autocast caches
  the casts until it exits; the convolution saves its weight's). The ops autocast keeps in fp32
  (:data:`FP32_OPS`, per device) cast a low-precision input up; concatenation and addition cast to the widest
  input; everything else runs in its input's precision. A cast's backward casts the gradient back. Weights,
  their gradients and the optimizer state stay fp32 (mixed precision with fp32 master weights).
* **Optimizer step.** SGD keeps one momentum buffer per weight, Adam and AdamW two (and a step count, a CPU
  scalar). The update's temporaries are PyTorch's: on the CPU a loop over the weights that holds two temporaries
  of one weight's size (SGD with nnU-Net's Nesterov momentum and weight decay; Adam's square root and its
  quotient); on CUDA ``foreach`` ops that hold one temporary of every weight.

Not counted: scalars (the loss, its weights), the few bytes of the norms' per-channel gradients before they are
summed, and what libraries allocate outside tensors (cuDNN and oneDNN workspaces, the allocators' caches).
``tests/test_training_memory.py`` checks the peak against the bytes of live tensors in real steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import UNetGenError, did_you_mean
from .plan import Layer, Plan

__all__ = [
    "DEVICES",
    "FP32_OPS",
    "OPTIMIZERS",
    "PRECISIONS",
    "RULES",
    "TrainingMemory",
    "check_training_options",
    "checkpoint_levels",
    "recomputed_layers",
    "training_memory",
]

#: Optimizer → buffers of state per weight (the weight's size each).
OPTIMIZERS: dict[str | None, int] = {None: 0, "sgd": 1, "adam": 2, "adamw": 2}
#: Precision → bytes per value of the activations (fp32: no autocast; bf16/fp16: autocast to that type).
PRECISIONS = {"fp32": 4, "bf16": 2, "fp16": 2}
#: Where the step runs: a few rules differ (dropout's mask, autocast's op lists, the optimizer's implementation).
DEVICES = ("cuda", "cpu")
#: Layers that autocast runs in fp32, per device, as ``(kind, what)`` (torch 2.13's lists: on the CPU the 3D pools
#: and the 1D/2D reflection and 1D–3D replication pads; on CUDA group and layer norm and softmax). The loss
#: (cross-entropy) runs in fp32 on both.
FP32_OPS: dict[str, frozenset[tuple[str, str]]] = {
    "cpu": frozenset({
        ("max_pool", "3d"), ("avg_pool", "3d"), ("pad", "reflect 1d"), ("pad", "reflect 2d"),
        ("pad", "replicate 1d"), ("pad", "replicate 2d"), ("pad", "replicate 3d"),
    }),
    "cuda": frozenset({("norm", "group"), ("norm", "layer"), ("final", "softmax")}),
}

_FP32 = 4
_INT64 = 8


@dataclass(frozen=True)
class TrainingMemory:
    """What one training step keeps in memory, and its peak.

    Attributes:
        parameter_bytes: the weights (fp32) and the batch norms' running statistics.
        gradient_bytes: the weights' gradients (fp32), all of them alive after the backward pass.
        optimizer_bytes: the optimizer's state (fp32).
        input_bytes: the input batch and its targets (int64 class indices, one map per output).
        saved_bytes: what autograd keeps for the backward pass when the forward pass ends (activations, masks,
            indices, statistics, weight casts), the input and targets not included.
        peak_bytes: the most bytes alive at once during the step.
        phase: where the peak is: ``forward`` (with the loss), ``backward`` or ``step``.
        phase_peaks: the peak of each phase.
        device: where the step runs (``cuda`` or ``cpu``).
    """

    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    input_bytes: int
    saved_bytes: int
    peak_bytes: int
    phase: str
    phase_peaks: dict[str, int] = field(default_factory=dict)
    device: str = "cuda"


def check_training_options(optimizer: str | None, precision: str, device: str) -> None:
    """Check the options of a training estimate.

    Raises:
        UNetGenError: naming the bad option and the valid ones.
    """
    if optimizer not in OPTIMIZERS:
        raise UNetGenError(f"optimizer {optimizer!r}: expected sgd, adam, adamw or none"
                           f"{did_you_mean(optimizer, ['sgd', 'adam', 'adamw', 'none'])}")
    if precision not in PRECISIONS:
        raise UNetGenError(f"precision {precision!r}: expected fp32, bf16 or fp16{did_you_mean(precision, PRECISIONS)}")
    if device not in DEVICES:
        raise UNetGenError(f"device {device!r}: expected cuda or cpu{did_you_mean(device, DEVICES)}")


def checkpoint_levels(plan: Plan, levels: str | Sequence[int] | None) -> tuple[int, ...]:
    """The levels that ``levels`` asks to checkpoint: ``"levels"`` (or ``"all"``) for every level, ``None`` or
    ``"none"`` for none, or level numbers (0 the top, ``depth − 1`` the bottleneck).

    Raises:
        UNetGenError: for a level the network does not have, or another word.
    """
    if levels is None or levels == "none":
        return ()
    if isinstance(levels, str):
        if levels not in ("levels", "all"):
            raise UNetGenError(f"checkpoint {levels!r}: expected 'levels' (every level), 'none' or level numbers "
                               f"from 0 to {plan.depth - 1}")
        return tuple(range(plan.depth))
    chosen = sorted(set(levels))
    bad = [level for level in chosen if isinstance(level, bool) or not isinstance(level, int)
           or not 0 <= level < plan.depth]
    if bad:
        raise UNetGenError(f"checkpoint levels {list(levels)}: {bad[0]!r} is not a level; the network has levels 0 "
                           f"to {plan.depth - 1} (0 is the top, {plan.depth - 1} the bottleneck)")
    return tuple(chosen)


def _regions(plan: Plan, levels: tuple[int, ...]) -> dict[str, int]:
    """Layer name → the checkpointed region it runs in: an encoder level's block (the bottleneck's), and its decoder
    level's convolution block (a region of its own: the concatenation before it runs outside)."""
    region: dict[str, int] = {}
    count = 0
    for level in levels:
        encoder = "bottleneck" if level == plan.depth - 1 else f"encoder.{level}"
        for prefix in (f"{encoder}.", f"decoder.{level}.convs."):  # the modules checkpoint_levels wraps
            inside = [layer.name for layer in plan.layers if layer.name.startswith(prefix)]
            for name in inside:
                region[name] = count
            count += bool(inside)
    return region


def recomputed_layers(plan: Plan, checkpoint: str | Sequence[int] | None) -> frozenset[str]:
    """The layers whose forward pass activation checkpointing of ``checkpoint`` (levels, as
    :func:`checkpoint_levels` takes them) runs twice: once in the forward pass, once recomputed in the backward."""
    return frozenset(_regions(plan, checkpoint_levels(plan, checkpoint)))


class _Ledger:
    """Storages and who refers to them; a storage is freed when nothing does. Tracks the peak of live bytes."""

    def __init__(self) -> None:
        self.size: dict[int, int] = {}
        self.refs: dict[int, set[str]] = {}
        self.live = 0
        self.phase = "forward"
        self.phase_peaks: dict[str, int] = {}
        self._count = 0

    def new(self, nbytes: int, holder: str) -> int:
        self._count += 1
        self.size[self._count] = nbytes
        self.refs[self._count] = {holder}
        self.live += nbytes
        self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), self.live)
        return self._count

    def hold(self, key: int, holder: str) -> None:
        self.refs[key].add(holder)

    def drop(self, key: int, holder: str) -> None:
        refs = self.refs.get(key)
        if refs is None or holder not in refs:
            return
        refs.discard(holder)
        if not refs:
            self.live -= self.size.pop(key)
            del self.refs[key]

    def temporary(self, nbytes: int) -> None:
        """Bytes alive for a moment (a temporary inside an op)."""
        self.drop(self.new(nbytes, "tmp"), "tmp")


@dataclass
class _Value:
    """A tensor of the forward pass: its storage, elements and bytes per element, whether autograd follows it."""

    key: int
    numel: int
    itemsize: int
    grad: bool
    view: bool = False  # a view op's output (an instance norm's): in-place ops on it rewrite its base's history

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass
class _Grad:
    """A gradient tensor: its storage, whether it owns it whole (not a view), how many buffers hold it."""

    key: int
    holder: str
    dense: bool
    users: int = 1


@dataclass
class _Node:
    """A backward node: the value whose gradient it reads, the inputs it writes gradients for and how (``new``,
    ``view`` of its gradient, ``same`` tensor), what it saved, its temporaries and its weights' gradients."""

    out: str
    grads: list[tuple[str, str]]
    saves: list[int]
    temporaries: list[int] = field(default_factory=list)
    weight_bytes: int = 0
    low_weight_bytes: int = 0
    region: int | None = None


class _Step:
    """One training step, replayed: the rules write values and nodes; :meth:`backward` runs the nodes."""

    def __init__(self, plan: Plan, batch: int, precision: str, device: str, metered: bool = False) -> None:
        self.plan = plan
        self.in_place_sums = not metered
        self.batch = batch
        self.low = PRECISIONS[precision] if precision != "fp32" else 0
        self.device = device
        self.dims = len(plan.input_size)
        self.memory = _Ledger()
        self.values: dict[str, _Value] = {}
        self.nodes: list[_Node] = []
        self.buffers: dict[str, _Grad] = {}  # gradients waiting for the node that made a value
        self.passes: dict[str, str] = {}  # values that are another value (a crop that crops nothing)
        self.cache: list[int] = []  # autocast's weight casts
        self.shapes = {"input": plan.input_shape, **{layer.name: layer.shape for layer in plan.layers}}
        self._grads = 0
        # activation checkpointing: the region being run, its nodes, the layers of each region
        self.region: int | None = None
        self.region_nodes: dict[int, list[int]] = {}
        self.region_layers: dict[int, list[Layer]] = {}
        self.recomputing: list[_Node] | None = None
        self.region_inputs: dict[int, list[int]] = {}

    # --- values -------------------------------------------------------------------------------------------------

    def plan_shape(self, name: str) -> tuple[int, ...]:
        """The planned output shape of layer ``name`` (``(channels, *spatial)``)."""
        return self.shapes[name]

    def numel(self, shape: tuple[int, ...]) -> int:
        return self.batch * math.prod(shape)

    def new(self, name: str, numel: int, itemsize: int, grad: bool) -> _Value:
        """A new tensor called ``name``, held by Python."""
        value = _Value(self.memory.new(numel * itemsize, f"py:{name}"), numel, itemsize, grad)
        self.values[name] = value
        return value

    def alias(self, name: str, source: str, numel: int | None = None) -> _Value:
        """``name`` shares ``source``'s storage (in place, or a view), held by Python."""
        base = self.values[source]
        self.memory.hold(base.key, f"py:{name}")
        value = _Value(base.key, base.numel if numel is None else numel, base.itemsize, base.grad)
        self.values[name] = value
        return value

    def done(self, name: str) -> None:
        """Python no longer refers to ``name``."""
        self.memory.drop(self.values[name].key, f"py:{name}")

    def node(self, out: str, grads: list[tuple[str, str]], saves: list[int], **extra: int | list[int]) -> None:
        """A backward node for ``out``, if autograd follows any of its inputs or it has weights."""
        grads = [(name, how) for name, how in grads if self.values[name].grad]
        if not grads and not extra.get("weight_bytes"):
            return
        node = _Node(out, grads, saves, region=self.region, **extra)  # type: ignore[arg-type]
        if self.recomputing is not None:  # kept for the node that saved them the first time
            for key in saves:
                self.memory.hold(key, f"recomputed:{len(self.recomputing)}")
            self.recomputing.append(node)
            return
        if self.region is not None:  # checkpointed: the saved tensors are not kept (recomputed in the backward)
            self.region_nodes.setdefault(self.region, []).append(len(self.nodes))
        else:
            for key in saves:
                self.memory.hold(key, f"saved:{len(self.nodes)}")
        self.nodes.append(node)

    def cast(self, name: str, itemsize: int, label: str) -> str:
        """``name`` as ``itemsize`` bytes per value (autocast): the same value, or a new cast called ``label``,
        which Python drops with :meth:`done` after the op that reads it."""
        value = self.values[name]
        if value.itemsize == itemsize:
            return name
        self.new(label, value.numel, itemsize, value.grad)
        self.node(label, [(name, "new")], [])
        return label

    def low_input(self, layer: Layer, name: str) -> str:
        """The input of an op autocast runs in low precision."""
        return self.cast(name, self.low, f"{layer.name}<low>") if self.low else name

    def fp32_input(self, layer: Layer, name: str) -> str:
        """The input of an op autocast keeps in fp32 (as it is when autocast is off)."""
        return self.cast(name, _FP32, f"{layer.name}<fp32>") if self.low else name

    def drop_cast(self, original: str, read: str) -> None:
        if read != original:
            self.done(read)

    def runs_fp32(self, layer: Layer, what: str | None = None) -> bool:
        if not self.low:
            return False
        return (layer.kind, what or layer.mode) in FP32_OPS[self.device]

    def weight_cast(self, count: int, saved: int) -> int:
        """Autocast's cached low-precision copy of ``count`` weights; returns the part the op saves (``saved``
        values), the rest (the bias) lives in the cache only."""
        if not self.low:
            return 0
        key = self.memory.new(saved * self.low, "cache")
        self.cache.append(key)
        if count > saved:
            self.cache.append(self.memory.new((count - saved) * self.low, "cache"))
        return key

    # --- gradients ------------------------------------------------------------------------------------------------

    def _grad(self, nbytes: int) -> _Grad:
        self._grads += 1
        holder = f"grad:{self._grads}"
        return _Grad(self.memory.new(nbytes, holder), holder, dense=True)

    def _view(self, grad: _Grad) -> _Grad:
        self._grads += 1
        holder = f"grad:{self._grads}"
        self.memory.hold(grad.key, holder)
        return _Grad(grad.key, holder, dense=False)

    def _release(self, grad: _Grad) -> None:
        grad.users -= 1
        if grad.users == 0:
            self.memory.drop(grad.key, grad.holder)

    def _give(self, name: str, grad: _Grad) -> None:
        """Hand ``grad`` to the node that made ``name``: kept, or summed with the gradient already there."""
        while name in self.passes:
            name = self.passes[name]
        if name not in self.values or not self.values[name].grad:
            self._release(grad)
            return
        old = self.buffers.get(name)
        if old is None:
            self.buffers[name] = grad
        elif self.in_place_sums and old.dense and old.users == 1 and self.memory.refs[old.key] == {old.holder}:
            self._release(grad)  # summed into the old one, in place
        else:
            total = self._grad(self.values[name].nbytes)
            self._release(old)
            self._release(grad)
            self.buffers[name] = total

    def recompute(self, region: int) -> None:
        """Activation checkpointing: the first node of a checkpointed region to run recomputes the region's forward
        pass; what the region's nodes save is kept for them until each has run, the rest is freed as it goes."""
        kept = dict(self.values)
        self.recomputing = []
        made: set[str] = set()
        layers = self.region_layers[region]
        last_use: dict[str, int] = {}
        for index, layer in enumerate(layers):
            for name in layer.inputs + layer.holds:
                last_use[name] = index
        for index, layer in enumerate(layers):
            before = set(self.values)
            RULES[layer.kind](self, layer)
            made |= {name for name in self.values if name not in before} | {layer.name}
            for name in sorted(set(layer.inputs + layer.holds)):
                if last_use.get(name) == index and name in made:
                    self.done(name)
        self.done(layers[-1].name)
        for original, node in zip(self.region_nodes[region], self.recomputing):
            self.nodes[original].saves = node.saves
            for key in node.saves:
                self.memory.hold(key, f"saved:{original}")
        for position, node in enumerate(self.recomputing):
            for key in node.saves:
                self.memory.drop(key, f"recomputed:{position}")
        self.recomputing = None
        while self.cache:  # the recomputation's autocast exits too
            self.memory.drop(self.cache.pop(), "cache")
        self.values = kept

    def backward(self) -> None:
        """Run the nodes, last made first (recomputing checkpointed regions when their first node runs)."""
        recomputed: set[int] = set()
        for index in reversed(range(len(self.nodes))):
            node = self.nodes[index]
            if node.region is not None and node.region not in recomputed:
                recomputed.add(node.region)
                self.recompute(node.region)
            incoming = self.buffers.pop(node.out, None)
            made: list[tuple[str, _Grad]] = []
            if incoming is not None:
                for name, how in node.grads:
                    if how == "new":
                        made.append((name, self._grad(self.values[name].nbytes)))
                    elif how == "view":
                        made.append((name, self._view(incoming)))
                    else:
                        incoming.users += 1
                        made.append((name, incoming))
            temporaries = [self.memory.new(nbytes, "tmp") for nbytes in node.temporaries]  # alive together
            for key in temporaries:
                self.memory.drop(key, "tmp")
            if node.low_weight_bytes:  # the low-precision gradient of a cast weight, cast up to fp32
                low = self.memory.new(node.low_weight_bytes, "tmp")
                self.memory.new(node.weight_bytes, "weight-grad")
                self.memory.drop(low, "tmp")
            elif node.weight_bytes:
                self.memory.new(node.weight_bytes, "weight-grad")
            if incoming is not None:
                self._release(incoming)
            for key in node.saves:
                self.memory.drop(key, f"saved:{index}")
            for name, grad in made:
                self._give(name, grad)
            if node.region is not None and index == self.region_nodes[node.region][0]:
                for key in self.region_inputs.pop(node.region):  # the checkpoint's frame lets its inputs go
                    self.memory.drop(key, f"checkpoint:{node.region}")

    def seed(self, name: str) -> None:
        """The loss's gradient (a scalar: no bytes)."""
        self.buffers[name] = _Grad(self.memory.new(0, "seed"), "seed", dense=True)


# --- one rule per layer kind: its forward pass, and the node it leaves for the backward pass -----------------------


def _conv(step: _Step, layer: Layer) -> None:
    """Convolution (and transposed convolution): saves its input and (under autocast) its weight's cast. A padding
    mode other than zeros pads first (``F.pad``) and convolves the padded map."""
    source = layer.inputs[0]
    read = source
    if layer.kind == "conv" and layer.mode != "zeros" and any(a or b for a, b in layer.pads):
        shape = step.plan_shape(source)
        padded = (shape[0], *(n + a + b for n, (a, b) in zip(shape[1:], layer.pads)))
        read = _pad_op(step, f"{layer.name}<pad>", source, padded, layer.mode)
    cast = step.low_input(layer, read)
    weights = layer.params - (layer.shape[0] if layer.bias else 0)
    weight_cast = step.weight_cast(layer.params, weights)
    value = step.values[cast]
    step.new(layer.name, step.numel(layer.shape), step.low or value.itemsize, True)
    saves = [value.key] + ([weight_cast] if weight_cast else [])
    step.node(layer.name, [(cast, "new")], saves, weight_bytes=layer.params * _FP32,
              low_weight_bytes=layer.params * step.low)
    step.drop_cast(read, cast)
    if read != source:
        step.done(read)


def _pad_op(step: _Step, name: str, source: str, shape: tuple[int, ...], mode: str) -> str:
    """``F.pad`` of ``source`` to ``shape`` in ``mode``; returns the padded value's name (Python holds it)."""
    what = f"{mode} {step.dims}d"
    read = step.fp32_input(Layer(name, "pad", (source,), shape), source) if step.runs_fp32(
        Layer(name, "pad", (source,), shape), what) else source
    value = step.values[read]
    out = step.new(name, step.numel(shape), value.itemsize, value.grad)
    if mode in ("reflect", "replicate"):
        step.node(name, [(read, "new")], [value.key])
    elif mode == "circular":
        # F.pad copies slices into a new tensor; the backward of each copy (CopySlices) holds two padded-size
        # tensors besides its incoming gradient: the peak is two padded maps over the incoming gradient
        step.node(name, [(read, "new")], [], temporaries=[2 * out.nbytes - value.nbytes])
    else:
        step.node(name, [(read, "new")], [])
    step.drop_cast(source, read)
    return name


def _pad(step: _Step, layer: Layer) -> None:
    _pad_op(step, layer.name, layer.inputs[0], layer.shape, layer.mode)


def _pool(step: _Step, layer: Layer) -> None:
    """Max-pooling saves its input and the indices (int64); average pooling its input."""
    source = layer.inputs[0]
    read = step.fp32_input(layer, source) if step.runs_fp32(layer, f"{step.dims}d") else source
    value = step.values[read]
    step.new(layer.name, step.numel(layer.shape), value.itemsize, value.grad)
    saves = [value.key]
    if layer.kind == "max_pool":
        indices = step.memory.new(step.numel(layer.shape) * _INT64, f"py:{layer.name}<indices>")
        saves.append(indices)
    step.node(layer.name, [(read, "new")], saves if value.grad else [])
    if layer.kind == "max_pool":
        step.memory.drop(saves[-1], f"py:{layer.name}<indices>")
    step.drop_cast(source, read)


def _upsample(step: _Step, layer: Layer) -> None:
    """Interpolation saves nothing (its backward needs only sizes)."""
    value = step.values[layer.inputs[0]]
    step.new(layer.name, step.numel(layer.shape), value.itemsize, value.grad)
    step.node(layer.name, [(layer.inputs[0], "new")], [])


def _norm(step: _Step, layer: Layer) -> None:
    """A norm saves its input and its statistics (mean and inverse deviation, fp32): per channel (batch), per sample
    and channel (instance, which also keeps its weight repeated per sample), per sample and group (group,
    layer)."""
    source = layer.inputs[0]
    read = step.fp32_input(layer, source) if step.runs_fp32(layer) else source
    value = step.values[read]
    channels = layer.shape[0]
    count = {"batch": channels, "instance": step.batch * channels}.get(layer.mode, step.batch * layer.groups)
    saves = [value.key]
    if layer.mode == "instance" and layer.params:  # F.instance_norm repeats the weight and the bias per sample
        saves.append(step.memory.new(count * _FP32, "tmp"))
        step.memory.temporary(count * _FP32)
    out = step.new(layer.name, step.numel(layer.shape), value.itemsize, True)
    out.view = layer.mode == "instance"  # F.instance_norm returns a view of a batch norm over (1, N·C, ...)
    saves += [step.memory.new(count * _FP32, "tmp"), step.memory.new(count * _FP32, "tmp")]
    step.node(layer.name, [(read, "new")], saves, weight_bytes=layer.params * _FP32)
    for key in saves[1:]:
        step.memory.drop(key, "tmp")
    step.drop_cast(source, read)


def _act(step: _Step, layer: Layer) -> None:
    """ReLU, leaky ReLU and ELU work in place and save their output; SiLU works in place and saves a copy of its
    input; GELU saves its input; PReLU (low precision under autocast) its input and weight; sigmoid its output.

    In place on a view (an instance norm's output), autograd rewrites the view's history: the backward first makes
    the gradient of the view's base (``as_strided``'s, zero-filled), then ``CopySlices`` writes a new one from a
    copy of it and the activation's own gradient (two temporaries of the map's size).
    """
    source = layer.inputs[0]
    value = step.values[source]
    if layer.mode in ("relu", "leaky_relu", "elu", "silu"):
        saved = step.memory.new(value.nbytes, "tmp") if layer.mode == "silu" else value.key
        out = step.alias(layer.name, source)
        if value.view:
            base = f"{layer.name}<base>"
            step.values[base] = _Value(value.key, value.numel, value.itemsize, True)
            step.node(base, [(source, "new")], [saved], temporaries=[value.nbytes, value.nbytes])
            step.node(layer.name, [(base, "new")], [])
        else:
            step.node(layer.name, [(source, "new")], [saved])
        if layer.mode == "silu":
            step.memory.drop(saved, "tmp")
        del out
    elif layer.mode == "prelu":
        read = step.low_input(layer, source)
        weight_cast = step.weight_cast(layer.params, layer.params)
        read_value = step.values[read]
        step.new(layer.name, value.numel, read_value.itemsize, True)
        # its backward writes the input's gradient and a per-element weight gradient, then sums the latter
        step.node(layer.name, [(read, "new")], [read_value.key] + ([weight_cast] if weight_cast else []),
                  temporaries=[read_value.nbytes], weight_bytes=layer.params * _FP32,
                  low_weight_bytes=layer.params * step.low)
        step.drop_cast(source, read)
    elif layer.mode == "sigmoid":  # an attention gate's map: saves its output
        out = step.new(layer.name, value.numel, value.itemsize, value.grad)
        step.node(layer.name, [(source, "new")], [out.key])
    else:  # gelu
        step.new(layer.name, value.numel, value.itemsize, value.grad)
        step.node(layer.name, [(source, "new")], [value.key])


def _dropout(step: _Step, layer: Layer) -> None:
    """Training-mode dropout writes a new map and keeps its mask: on the CPU the scaled noise it multiplies by (the
    input's type), on CUDA the fused kernel's bool mask."""
    value = step.values[layer.inputs[0]]
    mask = step.memory.new(value.numel * (value.itemsize if step.device == "cpu" else 1), "tmp")
    step.new(layer.name, value.numel, value.itemsize, value.grad)
    step.node(layer.name, [(layer.inputs[0], "new")], [mask])
    step.memory.drop(mask, "tmp")


def _crop(step: _Step, layer: Layer) -> None:
    """A crop narrows one axis at a time (views); each narrowing's backward writes a zero-filled gradient of its
    input's size. A crop of nothing is its input."""
    source = layer.inputs[0]
    shape = list(step.plan_shape(source))
    current = source
    cropped = [(axis, a, b) for axis, (a, b) in enumerate(layer.crop) if a or b]
    if not cropped:
        step.alias(layer.name, source)
        step.passes[layer.name] = source
        return
    for index, (axis, a, b) in enumerate(cropped):
        shape[axis + 1] -= a + b
        name = layer.name if index == len(cropped) - 1 else f"{layer.name}<{axis}>"
        step.alias(name, current, step.numel(tuple(shape)))
        step.node(name, [(current, "new")], [])
        if current != source:
            step.done(current)
        current = name


def _join(step: _Step, layer: Layer, gradient: str) -> None:
    """A layer of several inputs that saves nothing, computed in the widest input type under autocast; its backward
    hands each input ``gradient`` (``view``: a slice of its own; ``same``: the whole of it)."""
    itemsize = max(step.values[name].itemsize for name in layer.inputs)
    reads = [step.cast(name, itemsize, f"{layer.name}<{i}>") for i, name in enumerate(layer.inputs)]
    step.new(layer.name, step.numel(layer.shape), itemsize, True)
    step.node(layer.name, [(name, gradient) for name in reads], [])
    for name, read in zip(layer.inputs, reads):
        step.drop_cast(name, read)


def _concat(step: _Step, layer: Layer) -> None:
    """Concatenation saves nothing; its backward hands out views."""
    _join(step, layer, "view")


def _add(step: _Step, layer: Layer) -> None:
    """Addition saves nothing; its backward hands its gradient to both inputs."""
    _join(step, layer, "same")


def _mul(step: _Step, layer: Layer) -> None:
    """A product (an attention gate: the skip by a one-channel map) saves both inputs; its backward writes both
    gradients, the broadcast input's as a full-size product summed over the channels (a temporary)."""
    itemsize = max(step.values[name].itemsize for name in layer.inputs)
    reads = [step.cast(name, itemsize, f"{layer.name}<{i}>") for i, name in enumerate(layer.inputs)]
    out = step.new(layer.name, step.numel(layer.shape), itemsize, True)
    broadcast = [out.nbytes for name in reads if step.values[name].numel != out.numel]
    step.node(layer.name, [(name, "new") for name in reads], [step.values[name].key for name in reads],
              temporaries=broadcast)
    for name, read in zip(layer.inputs, reads):
        step.drop_cast(name, read)


def _mirror(step: _Step, layer: Layer) -> None:
    """Mirroring the input: no gradient flows to the input, so autograd records nothing."""
    if layer.in_place:
        step.alias(layer.name, layer.inputs[0])
        return
    value = step.values[layer.inputs[0]]
    step.new(layer.name, step.numel(layer.shape), value.itemsize, False)


def _final(step: _Step, layer: Layer) -> None:
    """Sigmoid and softmax save their output (CUDA's autocast runs softmax in fp32)."""
    source = layer.inputs[0]
    read = step.fp32_input(layer, source) if step.runs_fp32(layer) else source
    value = step.values[read]
    out = step.new(layer.name, value.numel, value.itemsize, value.grad)
    step.node(layer.name, [(read, "new")], [out.key])
    step.drop_cast(source, read)


#: Layer kind → its rule.
RULES: dict[str, Callable[[_Step, Layer], None]] = {
    "conv": _conv,
    "conv_transpose": _conv,
    "max_pool": _pool,
    "avg_pool": _pool,
    "upsample": _upsample,
    "pad": _pad,
    "norm": _norm,
    "act": _act,
    "dropout": _dropout,
    "crop": _crop,
    "output_crop": _crop,
    "concat": _concat,
    "add": _add,
    "mul": _mul,
    "mirror": _mirror,
    "final": _final,
}


def _loss(step: _Step, output: str, index: int) -> str:
    """Cross-entropy of one output (fp32 under autocast): log-softmax (saved) and the negative log-likelihood."""
    read = step.cast(output, _FP32, f"loss.{index}<fp32>") if step.low else output
    value = step.values[read]
    logp = step.new(f"loss.{index}.log_softmax", value.numel, _FP32, True)
    step.node(f"loss.{index}.log_softmax", [(read, "new")], [logp.key])
    step.drop_cast(output, read)
    step.values[f"loss.{index}"] = _Value(step.memory.new(0, "py:loss"), 1, _FP32, True)
    step.node(f"loss.{index}", [(f"loss.{index}.log_softmax", "new")], [])
    step.done(f"loss.{index}.log_softmax")
    return f"loss.{index}"


def training_memory(
    plan: Plan,
    batch: int = 1,
    *,
    optimizer: str | None = "sgd",
    precision: str = "fp32",
    device: str = "cuda",
    checkpoint: str | Sequence[int] | None = None,
    metered: bool = False,
) -> TrainingMemory:
    """Replay one training step of ``plan`` and measure what it keeps in memory.

    Args:
        plan: the network at the training patch size.
        batch: samples per step.
        optimizer: ``sgd`` (momentum), ``adam``, ``adamw`` or None (no state, no step).
        precision: ``fp32``, or ``bf16``/``fp16`` autocast.
        device: ``cuda`` or ``cpu`` (what differs: see the module's docstring).
        checkpoint: levels run under activation checkpointing (:func:`checkpoint_levels`;
            :func:`unetgen.network.recompute.checkpoint_levels` does it to a built network): their forward pass
            keeps only its inputs, and the backward pass recomputes it when it reaches them.
        metered: replay the step as it runs under a ``TorchDispatchMode`` (:class:`~unetgen.network.measure.LiveBytes`),
            where autograd sums two gradients of one tensor into a new tensor rather than in place; for checking the
            replay against the meter.

    Returns:
        The :class:`TrainingMemory`.

    Raises:
        UNetGenError: for an unknown optimizer, precision or device, or a level the network does not have.
    """
    check_training_options(optimizer, precision, device)
    regions = _regions(plan, checkpoint_levels(plan, checkpoint))
    step = _Step(plan, batch, precision, device, metered)
    memory = step.memory
    layers = plan.layers
    weights = plan.parameters * _FP32 + _norm_buffers(layers)
    state = OPTIMIZERS[optimizer] * plan.parameters * _FP32
    if optimizer in ("adam", "adamw") and device == "cpu":
        state += _FP32 * _weight_tensors(layers)  # the step counts
    memory.new(weights + state, "model")
    numel = step.numel(plan.input_shape)
    step.values["input"] = _Value(memory.new(numel * _FP32, "caller"), numel, _FP32, False)
    outputs = [plan.main_layers[-1].name] + [head.name for head in plan.heads[1:]]
    targets = sum(step.numel(plan.layer(name).shape[1:]) * _INT64 for name in outputs)
    memory.new(targets, "caller")
    inputs = step.numel(plan.input_shape) * _FP32 + targets

    last_use: dict[str, int] = {}
    for index, layer in enumerate(layers):
        for name in layer.inputs + layer.holds:
            last_use[name] = index
    for name in outputs:
        last_use[name] = len(layers)
    for layer in layers:
        if layer.name in regions:
            step.region_layers.setdefault(regions[layer.name], []).append(layer)
    for index, layer in enumerate(layers):
        step.region = regions.get(layer.name)
        if step.region is not None and step.region not in step.region_inputs:
            inside = {other.name for other in step.region_layers[step.region]}
            reads = [n for other in step.region_layers[step.region] for n in other.inputs + other.holds]
            keys = sorted({step.values[n].key for n in reads if n not in inside})
            for key in keys:  # the checkpoint keeps its inputs for the recomputation
                memory.hold(key, f"checkpoint:{step.region}")
            step.region_inputs[step.region] = keys
        RULES[layer.kind](step, layer)
        for name in sorted(set(layer.inputs + layer.holds)):
            if last_use.get(name) == index and name != "input":
                step.done(name)
    step.region = None
    if plan.final_activation != "none":  # the network applies its final activation to the auxiliary heads too
        for name in outputs[1:]:
            final = Layer(f"{name}.final", "final", (name,), plan.layer(name).shape, mode=plan.final_activation)
            _final(step, final)
            step.done(name)
            outputs[outputs.index(name)] = final.name
    losses = [_loss(step, name, index) for index, name in enumerate(outputs)]
    for name in outputs:
        step.done(name)
    for key in step.cache:  # autocast exits: its cached weight casts live on only where saved
        memory.drop(key, "cache")
    saved = memory.live - weights - state - inputs
    memory.phase = "backward"
    for name in losses:
        step.seed(name)
    step.backward()
    memory.phase = "step"
    gradients = plan.parameters * _FP32
    if optimizer is not None:
        memory.temporary(_step_temporaries(layers, optimizer, device))
    peaks = dict(memory.phase_peaks)
    phase = max(peaks, key=lambda p: peaks[p])
    return TrainingMemory(
        parameter_bytes=weights, gradient_bytes=gradients, optimizer_bytes=state, input_bytes=inputs,
        saved_bytes=saved, peak_bytes=peaks[phase], phase=phase, phase_peaks=peaks, device=device,
    )


def _norm_buffers(layers: tuple[Layer, ...]) -> int:
    """Batch norm's running mean and variance (fp32 per channel) and its batch count (int64)."""
    batch_norms = [layer for layer in layers if layer.kind == "norm" and layer.mode == "batch"]
    return sum(2 * layer.shape[0] * _FP32 + _INT64 for layer in batch_norms)


def _weight_tensors(layers: tuple[Layer, ...]) -> int:
    """How many weight tensors the network has (a weight and a bias each count)."""
    count = 0
    for layer in layers:
        if layer.kind in ("conv", "conv_transpose"):
            count += 1 + int(layer.bias)
        elif layer.kind == "norm":
            count += 2
        elif layer.kind == "act" and layer.params:
            count += 1
    return count


def _weight_sizes(layers: tuple[Layer, ...]) -> list[int]:
    """The size of each weight tensor, in values."""
    sizes: list[int] = []
    for layer in layers:
        if layer.kind in ("conv", "conv_transpose"):
            bias = layer.shape[0] if layer.bias else 0
            sizes += [layer.params - bias] + ([bias] if bias else [])
        elif layer.kind == "norm":
            sizes += [layer.shape[0], layer.shape[0]]
        elif layer.kind == "act" and layer.params:
            sizes.append(layer.params)
    return sizes


def _step_temporaries(layers: tuple[Layer, ...], optimizer: str, device: str) -> int:
    """The update's temporaries at their peak: two of the largest weight on the CPU (a loop over the weights), one
    of every weight on CUDA (``foreach``: SGD's weight-decayed gradients, Adam's square roots)."""
    sizes = _weight_sizes(layers)
    if not sizes:
        return 0
    if device == "cpu":
        return 2 * max(sizes) * _FP32
    return sum(sizes) * _FP32
