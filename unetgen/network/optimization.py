"""Built network → inference network: the same function, fewer and cheaper operations.

:func:`optimize` returns a copy of a built :class:`~unetgen.network.UNet` for inference only:

* batch normalisation with its running statistics is folded into the convolution before it, which gains a bias
  (as in Jacob et al. 2018, "Quantization and training of neural networks for efficient integer-arithmetic-only
  inference"): one pass over every feature map fewer, and no norm layer left;
* dropout, a no-op in eval mode, is removed;
* instance normalisation is computed as group normalisation with one channel per group, the same function
  (Wu & He 2018, sec. 3.1) and a faster kernel;
* activations that can run in place do (ReLU, leaky ReLU, ELU, SiLU): each overwrites its input, a map nothing
  else reads, instead of writing a second map of the same size. :func:`unetgen.build` makes them so already; this
  step is for networks whose activations were switched back by hand;
* 2D and 3D networks without a per-sample norm keep their feature maps channels-last (NHWC, NDHWC), the layout
  oneDNN's convolutions run in natively, so no convolution reorders its input or output. The first level converts
  the input and the last step converts the output back: callers see ordinary contiguous tensors. Networks with
  instance, group or layer norm stay contiguous: PyTorch's channels-last group norm (2.13, CPU) sums in a way that
  loses precision on large maps (relative errors up to 1e-3 at nnU-Net's 40×224×192), and its instance norm copies
  channels-last maps back to contiguous ones, which is slower than not converting them.

``optimize(model, dtype=torch.bfloat16)`` (or ``torch.float16``) also runs every layer in that precision: the
weights are folded in float64 and then rounded once, the input is converted on the way in and the output is
float32 again before the final activation (sigmoid and softmax in float32). It is faster only where the hardware
has instructions for it (:func:`unetgen.hardware.missing_instructions`: on the CPU, bfloat16 needs AVX-512 BF16
or AMX, float16 AMX-FP16; on a GPU, bfloat16 needs compute capability 8.0); elsewhere each value is widened to
float32 and back, slower than float32 itself, so it is refused with the instruction that is missing.

``optimize(model, winograd=True)`` goes further on 2D networks: large maps are convolved with Winograd's algorithm
(:class:`WinogradConv2d`), faster still, but less exact and with a larger workspace.
``optimize(model, for_export=True)`` does only the first two, which help every runtime: :func:`unetgen.export_onnx`
exports that.

What stays: the class, the state-dict keys of every remaining layer, the input checks, the output shape,
TorchScript, ``torch.export`` and ONNX export. Group and layer norms depend on the sample and cannot be folded;
they stay. Skip tensors are released as soon as they are concatenated, as in every built network
(:meth:`UNet.forward`). ``benchmarks/run.py`` measures what this is worth.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..hardware import missing_instructions
from ..errors import UNetGenError
from .unet import EncoderLevel, UNet, _is_exporting

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
#: Activations whose ``inplace`` flag gives the same result as writing a new tensor.
_IN_PLACE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SiLU)
#: The layout per number of spatial axes (None: leave it). 1D convolutions gain nothing from NWC on the CPU.
_CHANNELS_LAST: dict[int, str | None] = {1: None, 2: "channels_last", 3: "channels_last_3d"}
#: Poolings, by their number of spatial axes: the layers without weights that may lack a lower-precision kernel.
_POOLS: dict[type, int] = {
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3, nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
}
#: The precisions ``optimize(dtype=...)`` runs, by dtype: the name in :mod:`unetgen.hardware` and in messages.
PRECISIONS: dict[torch.dtype, str] = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class ToMemoryFormat(nn.Module):
    """Return the input in a memory layout, and a dtype, in one copy (none when it already is): where the layout or
    the precision changes in the network."""

    def __init__(self, layout: str, dtype: str = "") -> None:
        """Args:
        layout: ``channels_last``, ``channels_last_3d``, ``contiguous`` or ``preserve`` (a name: TorchScript keeps
            no ``torch.memory_format`` attributes).
        dtype: ``float32``, ``bfloat16`` or ``float16``; empty: keep the input's.
        """
        super().__init__()
        self.layout = layout
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if self.dtype == "float32":
            dtype = torch.float32
        elif self.dtype == "bfloat16":
            dtype = torch.bfloat16
        elif self.dtype == "float16":
            dtype = torch.float16
        if self.layout == "channels_last":
            return x.to(dtype=dtype, memory_format=torch.channels_last)
        if self.layout == "channels_last_3d":
            return x.to(dtype=dtype, memory_format=torch.channels_last_3d)
        if self.layout == "contiguous":
            return x.to(dtype=dtype, memory_format=torch.contiguous_format)
        return x.to(dtype=dtype)

    def extra_repr(self) -> str:
        return self.layout + (f", {self.dtype}" if self.dtype else "")


class InFloat32(nn.Module):
    """Run a layer in float32 inside a lower-precision network: for the few operations PyTorch has no bfloat16 or
    float16 kernel for on the CPU (``avg_pool3d``, torch 2.13). Pooling is a pass over memory, so the two
    conversions cost little."""

    def __init__(self, layer: nn.Module) -> None:
        """Args:
        layer: a layer without weights (a pooling).
        """
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float()).to(x.dtype)


class WinogradConv2d(nn.Conv2d):
    """A 3×3 convolution that runs NNPACK's Winograd F(6×6, 3×3) algorithm (Lavin & Gray 2016) on large maps.

    Winograd's algorithm computes each 6×6 block of output with several times fewer multiplications than the
    direct convolution, at the price of a larger rounding error and a workspace about twice the size of the input
    map. It pays on maps of at least ``min_pixels`` pixels with at least ``min_channels`` input channels
    (measured on a Zen 4 CPU: 1.3–2.3× faster than oneDNN's direct convolution from 64×64 up, even at 32×32,
    slower at 16×16, where transforming the weights dominates, and 3× slower with 1 or 3 input channels).
    Smaller maps, other devices and dtypes, tracing, ``torch.compile`` and ``torch.export`` use the ordinary
    convolution, so exported graphs hold a plain ``Conv``.
    """

    __constants__ = [*nn.Conv2d.__constants__, "min_pixels", "min_channels"]
    min_pixels: int = 48 * 48
    min_channels: int = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_winograd(x):
            if self.padding_mode != "zeros":
                x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                padding = [0, 0]
            else:
                padding = [int(self.padding[0]), int(self.padding[1])]
            return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias, padding, [1, 1])
        return self._conv_forward(x, self.weight, self.bias)

    def _use_winograd(self, x: torch.Tensor) -> bool:
        if not torch.jit.is_scripting():
            if torch.jit.is_tracing() or torch.compiler.is_compiling() or _is_exporting():
                return False
        return (
            x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.shape[1] >= self.min_channels and x.shape[2] * x.shape[3] >= self.min_pixels
            and torch._nnpack_available()  # also initialises NNPACK, once
        )


def optimize(
    model: UNet, *, channels_last: bool | None = None, winograd: bool = False, for_export: bool = False,
    dtype: torch.dtype | None = None,
) -> UNet:
    """A copy of ``model`` for fast inference, with the same outputs (within float32 rounding, or the rounding of
    ``dtype``).

    Folds batch normalisation into the convolutions, removes dropout, computes instance norm as group norm, runs
    activations in place and keeps the feature maps channels-last (2D and 3D networks without a per-sample norm);
    with ``dtype``, runs every layer in bfloat16 or float16. The user's model is not changed. See the module notes
    for each step and why.

    Args:
        model: a network from :func:`unetgen.build` or :func:`unetgen.load`, in any mode.
        channels_last: keep feature maps channels-last; default: for 2D and 3D networks with no norm or batch
            norm, unless ``winograd``. True for a network with a per-sample norm is allowed, but less precise (see
            the module notes).
        winograd: run the 2D 3×3 convolutions on large maps with Winograd's algorithm (:class:`WinogradConv2d`):
            about 1.4× faster on the paper's network, but with about 3× the rounding error (still ~1e-5 of the
            output's scale) and about twice the working memory. Needs NNPACK (in PyTorch's x86 and ARM builds);
            ignored where it is missing.
        for_export: only the rewrites that help every runtime (batch norm folded, dropout removed), for
            ``torch.export`` and ONNX: layouts mean nothing in an exported graph, and an instance norm exports as
            one ONNX ``InstanceNormalization`` where a group norm becomes five operations.
        dtype: ``torch.bfloat16`` or ``torch.float16``: run every layer in that precision (weights and feature
            maps); the copy takes any floating input and returns float32. Only where the device has the
            instructions that make it faster than float32 (see the module notes). Default: the model's dtype.

    Returns:
        A new :class:`~unetgen.network.UNet` in eval mode, on the same device and with the same dtype (or
        ``dtype``), without gradients, that computes what ``model`` computes in eval mode. Its ``optimizations``
        attribute lists what was done, in words.

    Raises:
        UNetGenError: when ``model`` is not a network built by unetgen, the options contradict each other
            (``channels_last`` for a 1D network, or with ``winograd`` or ``for_export``; ``dtype`` with
            ``winograd`` or ``for_export``), ``dtype`` is not one of float32, bfloat16 and float16, or the device
            has no fast path for it (naming the missing instruction).
    """
    if not isinstance(model, UNet):
        raise UNetGenError(
            f"optimize: got a {type(model).__name__}; give a network from unetgen.build() or unetgen.load()"
        )
    dims = model.spatial_dims
    if channels_last and dims == 1:
        raise UNetGenError("optimize: channels_last applies to 2D and 3D networks; this one is 1D (leave it out)")
    if for_export and (channels_last or winograd):
        raise UNetGenError("optimize: for_export leaves layouts and convolution algorithms to the runtime; "
                           "leave out channels_last and winograd")
    lower = _lower_precision(model, dtype, winograd=winograd, for_export=for_export)
    winograd = winograd and dims == 2 and torch.backends.nnpack.is_available()
    if channels_last and winograd:
        raise UNetGenError("optimize: winograd runs on contiguous maps; leave out channels_last=True")
    if for_export:
        channels_last = False
    if channels_last is None:
        channels_last = dims > 1 and model.plan.norms <= {"batch"} and not winograd
    layout = _CHANNELS_LAST[dims] if channels_last else None
    # The spec and the plan are immutable: share them rather than copy them.
    memo = {id(model.spec): model.spec, id(model.plan): model.plan}
    with torch.no_grad():
        fast = copy.deepcopy(model, memo)
    fast.eval()
    for parameter in fast.parameters():
        parameter.requires_grad_(False)
    done = []
    folded = _fold_batch_norms(fast)
    if folded:
        done.append(f"folded {folded} batch norm{_s(folded)} into their convolutions")
    dropped = _drop_dropout(fast)
    if dropped:
        done.append(f"removed {dropped} dropout layer{_s(dropped)}")
    if not for_export:
        swapped = _instance_to_group_norms(fast)
        if swapped:
            done.append(f"{swapped} instance norm{_s(swapped)} computed as group norms")
        in_place = 0
        for module in fast.modules():
            if isinstance(module, _IN_PLACE) and not module.inplace:
                module.inplace = True
                in_place += 1
        if in_place:
            done.append(f"{in_place} activation{_s(in_place)} in place")
    if winograd:
        done.append(f"{_use_winograd(fast)} convolutions by Winograd's algorithm on large maps")
    if lower is not None:
        fast.to(lower)  # after folding, which works in float64: each weight is rounded once
        done.append(f"{lower}".replace("torch.", "") + " weights and feature maps")
        islands = _float32_islands(fast, lower)
        if islands:
            done.append(f"{islands} in float32")
    if layout is not None:
        fast.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        done.append(f"feature maps {layout}")
    if layout is not None or lower is not None:
        name = str(lower).replace("torch.", "") if lower is not None else ""
        _set_entry(fast, ToMemoryFormat(layout or "preserve", name))
        if lower is not None:  # back to float32 before the final activation: sigmoid and softmax in float32
            fast.final = nn.Sequential(ToMemoryFormat("contiguous" if layout else "preserve", "float32"), fast.final)
        else:
            fast.final = nn.Sequential(fast.final, ToMemoryFormat("contiguous"))
    fast.optimizations = tuple(done)
    return fast


def _lower_precision(
    model: UNet, dtype: torch.dtype | None, *, winograd: bool, for_export: bool
) -> torch.dtype | None:
    """The lower precision to run in (None: keep the model's), after refusing what cannot be done or would be
    slower than float32 on the model's device."""
    if dtype is None:
        return None
    if dtype not in PRECISIONS:
        shown = ", ".join(f"torch.{str(d).replace('torch.', '')}" for d in PRECISIONS)
        raise UNetGenError(f"optimize: dtype {dtype!r}: give one of {shown}")
    first = next(model.parameters(), None)
    current = first.dtype if first is not None else torch.float32
    if dtype == torch.float32:  # always a fast path; a no-op unless the model is in another precision
        return None if current == torch.float32 else torch.float32
    name = PRECISIONS[dtype]
    if winograd or for_export:
        raise UNetGenError(
            f"optimize: dtype {name} with {'winograd' if winograd else 'for_export'}: Winograd's convolutions run "
            "float32 only, and an export writes float32 (quantize the file instead: export_onnx(quantize=...)); "
            "leave one out"
        )
    device = first.device if first is not None else torch.device("cpu")
    reason = slow_precision(name, device)
    if reason is not None:
        raise UNetGenError(
            f"optimize: {name} would run slower than float32 here: {reason}; leave dtype out (float32), or run "
            "on hardware that has them"
        )
    return dtype


def slow_precision(precision: str, device: torch.device | str = "cpu") -> str | None:
    """Why ``precision`` would run slower than float32 on ``device``, in words; None when it has a fast path.

    Args:
        precision: ``bf16`` or ``fp16`` (``fp32`` always has one).
        device: where the network runs.

    Returns:
        E.g. ``"this CPU lacks avx512_bf16 and amx_bf16"``, or None.
    """
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return f"{torch.cuda.get_device_name(device)} has no bfloat16 arithmetic (compute capability < 8.0)"
        return None
    if device.type == "cpu":
        return missing_instructions(precision)
    return None  # other accelerators: their own business


def _float32_islands(model: UNet, dtype: torch.dtype) -> str:
    """Wrap each pooling that has no kernel for ``dtype`` on the model's device in :class:`InFloat32`, with one
    log line saying why; what was wrapped, in words ('' when nothing)."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    missing: dict[str, int] = {}
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            dims = _POOLS.get(type(child))
            if dims is None:
                continue
            kernel = child.kernel_size if isinstance(child.kernel_size, tuple) else (child.kernel_size,) * dims
            try:
                with torch.no_grad():
                    child(torch.zeros(1, 1, *kernel, dtype=dtype, device=device))
            except (NotImplementedError, RuntimeError):  # "avg_pool3d_out_frame" not implemented for 'BFloat16'
                setattr(module, name, InFloat32(child))
                kind = type(child).__name__
                missing[kind] = missing.get(kind, 0) + 1
    if not missing:
        return ""
    what = ", ".join(f"{count} {kind}" for kind, count in missing.items())
    log.info(
        "optimize: %s: PyTorch %s has no %s kernel for %s on %s; they run in float32 (a pass over memory: it costs "
        "little)", what, torch.__version__, PRECISIONS[dtype], "them" if sum(missing.values()) > 1 else "it",
        device.type.upper(),
    )
    return what


def _set_entry(model: UNet, module: nn.Module) -> None:
    """Run ``module`` on the input before the first layer (after the mirroring of ``output: same``)."""
    first = model.encoder[0] if len(model.encoder) else model.bottleneck
    if isinstance(first, EncoderLevel):
        first.pool = module  # level 0 has no pool: an Identity, replaced
    else:  # a residual level: its stem (an Identity below the top) runs first
        first.stem = nn.Sequential(module, first.stem)


def _s(count: int) -> str:
    """The plural ending for ``count`` things."""
    return "" if count == 1 else "s"


def _use_winograd(model: nn.Module) -> int:
    """Make every 3×3, stride-1 2D convolution with enough input channels a :class:`WinogradConv2d`."""
    count = 0
    for module in list(model.modules()):
        for name, conv in list(module._modules.items()):
            if (
                type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.in_channels >= WinogradConv2d.min_channels
            ):
                with torch.device("meta"):  # no weights allocated: they are the old module's
                    fast = WinogradConv2d(
                        conv.in_channels, conv.out_channels, 3, padding=conv.padding, bias=conv.bias is not None,
                        padding_mode=conv.padding_mode,
                    )
                fast.weight, fast.bias = conv.weight, conv.bias
                setattr(module, name, fast)
                count += 1
    return count


def _sequences(model: nn.Module) -> Iterator[nn.Sequential]:
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            yield module


def _fold_batch_norms(model: nn.Module) -> int:
    """Fold every ``conv → batch norm`` pair of a Sequential into the convolution; the number folded."""
    count = 0
    for sequence in list(_sequences(model)):
        pairs = list(zip(sequence._modules.items(), list(sequence._modules.items())[1:]))
        for (_, conv), (name, norm) in pairs:
            if isinstance(conv, _CONVS) and isinstance(norm, _BATCH_NORMS) and norm.running_var is not None:
                _fold(conv, norm)
                delattr(sequence, name)
                count += 1
    return count


def _fold(conv: nn.modules.conv._ConvNd, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """conv ← norm ∘ conv with the norm's running statistics, worked out in float64 and stored in conv's dtype."""
    if norm.running_mean is None or norm.running_var is None:  # the caller folds only norms with statistics
        raise ValueError(f"{type(norm).__name__} has no running statistics to fold")
    weight = conv.weight
    scale = norm.weight.double() if norm.weight is not None else torch.ones_like(norm.running_var, dtype=torch.float64)
    shift = norm.bias.double() if norm.bias is not None else torch.zeros_like(scale)
    factor = scale / torch.sqrt(norm.running_var.double() + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(factor)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    with torch.no_grad():
        weight.copy_((weight.double() * factor.reshape(shape)).to(weight.dtype))
        new_bias = ((bias - norm.running_mean.double()) * factor + shift).to(weight.dtype)
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


def _instance_to_group_norms(model: nn.Module) -> int:
    """Replace each instance norm without running statistics by the equal group norm; the number replaced."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, _INSTANCE_NORMS) and not child.track_running_stats:
                channels = child.num_features
                group = nn.GroupNorm(channels, channels, eps=child.eps, affine=child.affine)
                if child.affine:  # same names and shapes: the state-dict keys stay
                    group.weight, group.bias = child.weight, child.bias
                setattr(module, name, group)
                count += 1
    return count


def _drop_dropout(model: nn.Module) -> int:
    """Remove dropout layers (identities in eval mode); the number removed."""
    count = 0
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d):
                if isinstance(module, nn.Sequential):
                    delattr(module, name)
                else:
                    setattr(module, name, nn.Identity())
                count += 1
    return count

