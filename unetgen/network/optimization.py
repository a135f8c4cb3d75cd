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
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UNetGenError
from .unet import UNet, _is_exporting

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
#: Activations whose ``inplace`` flag gives the same result as writing a new tensor.
_IN_PLACE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SiLU)
#: The layout per number of spatial axes (None: leave it). 1D convolutions gain nothing from NWC on the CPU.
_CHANNELS_LAST: dict[int, str | None] = {1: None, 2: "channels_last", 3: "channels_last_3d"}


class ToMemoryFormat(nn.Module):
    """Return the input in a memory layout (a no-op when it already is): where the layout changes in the network."""

    def __init__(self, layout: str) -> None:
        """Args:
        layout: ``channels_last``, ``channels_last_3d`` or ``contiguous`` (a name: TorchScript keeps no
            ``torch.memory_format`` attributes).
        """
        super().__init__()
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "channels_last":
            return x.contiguous(memory_format=torch.channels_last)
        if self.layout == "channels_last_3d":
            return x.contiguous(memory_format=torch.channels_last_3d)
        return x.contiguous()

    def extra_repr(self) -> str:
        return self.layout


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
    model: UNet, *, channels_last: bool | None = None, winograd: bool = False, for_export: bool = False
) -> UNet:
    """A copy of ``model`` for fast inference, with the same outputs (within float32 rounding).

    Folds batch normalisation into the convolutions, removes dropout, computes instance norm as group norm, runs
    activations in place and keeps the feature maps channels-last (2D and 3D networks without a per-sample norm).
    The user's model is not changed. See the module notes for each step and why.

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

    Returns:
        A new :class:`~unetgen.network.UNet` in eval mode, on the same device and with the same dtype, without
        gradients, that computes what ``model`` computes in eval mode. Its ``optimizations`` attribute lists what
        was done, in words.

    Raises:
        UNetGenError: when ``model`` is not a network built by unetgen, or the options contradict each other
            (``channels_last`` for a 1D network, or with ``winograd`` or ``for_export``).
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
    if layout is not None:
        fast.to(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
        first = fast.encoder[0] if len(fast.encoder) else fast.bottleneck
        first.pool = ToMemoryFormat(layout)  # level 0 has no pool: an Identity, replaced
        fast.final = nn.Sequential(fast.final, ToMemoryFormat("contiguous"))
        done.append(f"feature maps {layout}")
    fast.optimizations = tuple(done)
    return fast


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

