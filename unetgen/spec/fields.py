"""The spec: a validated, declarative description of one U-Net (pydantic v2), and how to load one.

A spec says *what* the network is; :mod:`unetgen.plan` works out every size from it and :mod:`unetgen.network`
builds it. The spec never imports torch.
"""

from __future__ import annotations

import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..errors import SpecError, did_you_mean
from .yaml_loader import parse_yaml, read_yaml_file

#: The paper's input tile (Ronneberger et al. 2015, Fig. 1) and the 3D U-Net's (Çiçek et al. 2016): the default
#: input size is the smallest valid size at least this large along each axis.
DEFAULT_SIZE_HINT = {1: 572, 2: 572, 3: 132}


PerAxis = int | list[int]


class UNetSpec(BaseModel):
    """A U-Net, described by its architecture choices. The defaults are the 2015 paper's network.

    Build one in code (``UNetSpec(depth=4, padding="same")``), from a file (:func:`load_spec`) or from a preset
    (:func:`preset`), and derive variants with :meth:`replace`, which validates again. Fields are validated in the
    order they are declared, so a check that involves two fields is reported on the later one.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)

    name: str = Field("unet", min_length=1, max_length=200, description="A short name for the network.")
    description: str = Field("", max_length=2000, description="Free text: where the design comes from.")
    spatial_dims: Literal[1, 2, 3] = Field(2, description="1, 2 or 3 spatial axes (Conv1d, Conv2d or Conv3d).")
    in_channels: int = Field(1, ge=1, le=4096, description="Channels of the input image.")
    out_channels: int = Field(2, ge=1, le=4096, description="Channels of the output map: the number of classes.")
    depth: int = Field(
        5, ge=1, le=12, description="Resolution levels, bottleneck included (the paper's is 5: four max-pools)."
    )
    convs_per_level: int = Field(2, ge=1, le=16, description="Convolutions in each level's block (the paper: 2).")
    width: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Channels at the first level (default 64), multiplied by `growth` at each level below. "
        "Give `width` or `channels`, not both.",
    )
    growth: float = Field(2.0, ge=1.0, le=4.0, description="Channel growth per level with `width` (rounded).")
    max_channels: int | None = Field(
        None, ge=1, le=65536, description="Cap on the channels of any level with `width` (nnU-Net caps at 320)."
    )
    channels: list[PerAxis] | None = Field(
        None,
        description="Channels of each level, top to bottom (instead of `width`): one entry per level, either the "
        "level's width or a list of the widths of its convolutions (the 3D U-Net: [[32, 64], [64, 128], ...]).",
    )
    up_channels: Literal["halve", "keep"] = Field(
        "halve",
        description="`halve`: the up-convolution outputs the channels of the level it goes up to (half, with the "
        "default doubling: the 2015 paper); `keep`: it keeps its input's channels (the 3D U-Net).",
    )
    padding: Literal["valid", "same"] = Field(
        "valid",
        description="`valid`: unpadded convolutions that shrink the map, as in the paper; "
        "`same`: padded convolutions that keep its size.",
    )
    kernel_size: int = Field(3, ge=1, le=15, description="Convolution kernel size (odd), every axis, every level.")
    kernel_sizes: list[PerAxis] | None = Field(
        None,
        description="Kernel size per level (overrides `kernel_size`): one entry per level, a size or one size per "
        "axis, odd (nnU-Net on thick slices: [[1, 3, 3], [3, 3, 3], ...]).",
    )
    pool_sizes: list[PerAxis] | None = Field(
        None,
        description="Max-pool factor below each level: depth − 1 entries, a factor or one per axis "
        "(default 2; anisotropic data: [[1, 2, 2], [2, 2, 2], ...]). Up-sampling uses the same factors.",
    )
    upsampling: Literal["upsample_conv", "transpose", "interpolate"] = Field(
        "transpose",
        description="`transpose`: 2×2 stride-2 transposed convolution (the paper's released Caffe model); "
        "`upsample_conv`: ×2 interpolation, then a 2×2 convolution (padded by one on the far side, so the size "
        "is exactly doubled); `interpolate`: ×2 interpolation alone, no parameters, the map keeping the channels "
        "of the level below (Oktay et al. 2018's published Attention U-Net).",
    )
    interpolation: Literal["nearest", "linear"] = Field(
        "nearest",
        description="Interpolation of `upsample_conv` and `interpolate`: nearest, or (bi/tri)linear. Not used by "
        "`transpose`.",
    )
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = Field(
        "zeros",
        description="How every padded convolution pads: the `same` convolutions and the 2×2 convolution of "
        "`upsample_conv`.",
    )
    norm: Literal["none", "batch", "instance", "group", "layer"] = Field(
        "none",
        description="Normalisation after each convolution, before the activation (each with a learned scale and "
        "shift; `layer` normalises each sample over channels and space, GroupNorm with one group).",
    )
    norm_groups: int = Field(8, ge=1, le=4096, description="Groups of `norm: group`; must divide every width.")
    conv_bias: bool | None = Field(
        None,
        description="Bias on the block convolutions. Default: on without normalisation, off with it (the "
        "norm's shift makes it redundant).",
    )
    up_bias: bool = Field(True, description="Bias on the up-convolutions.")
    activation: Literal["relu", "leaky_relu", "elu", "gelu", "silu", "prelu"] = Field(
        "relu", description="Activation after each convolution (and norm)."
    )
    negative_slope: float = Field(0.01, ge=0.0, le=1.0, description="Slope of `leaky_relu` below zero.")
    block: Literal["plain", "residual"] = Field(
        "plain",
        description="`plain`: convolutions in a row; `residual`: the block's input is added to its output before "
        "the last activation (through a 1×1 projection when the widths differ; centre-cropped when valid).",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate (0: none).")
    dropout_at: Literal["none", "bottleneck", "every_level", "every_conv"] = Field(
        "none",
        description="Where dropout goes: after the bottleneck's block (the paper's 'end of the contracting "
        "path'), after every level's block, or after every convolution's activation (UNet++, Zhou et al. 2018).",
    )
    init: Literal["pytorch", "paper"] = Field(
        "pytorch",
        description="Weight initialisation: PyTorch's default, or `paper`: He et al., normal with std √(2/N), "
        "N the inputs of one neuron, zero biases (Ronneberger et al. 2015, sec. 3).",
    )
    final_activation: Literal["none", "sigmoid", "softmax"] = Field(
        "none", description="Applied to the output: none (logits), sigmoid, or softmax over the channels."
    )
    output: Literal["crop", "same"] = Field(
        "crop",
        description="`crop`: the paper's behaviour, the output is the input less the network's border; "
        "`same`: the output has the input's size for any size, the input mirrored (reflect-padded) as needed.",
    )
    downsampling: Literal["maxpool", "avgpool", "conv"] = Field(
        "maxpool",
        description="How each level below the top halves the map (by its `pool_sizes` factor): `maxpool` (the "
        "paper), `avgpool`, or `conv`: the level's first convolution strides by the factor (nnU-Net, MONAI DynUNet).",
    )
    decoder_convs: int | None = Field(
        None, ge=1, le=16,
        description="Convolutions in each decoder level's block (default `convs_per_level`; nnU-Net's residual "
        "encoder networks: 1).",
    )
    encoder_blocks: list[int] | None = Field(
        None,
        description="A residual encoder as nnU-Net's ResEnc networks: a stem convolution, then this many residual "
        "blocks per level (e.g. [1, 3, 4, 6, 6, 6]); each block is conv → norm → act → conv → norm, plus the input "
        "(average-pooled where the block strides, projected by a 1×1 convolution and norm where it widens), → act. "
        "Needs `downsampling: conv` and `padding: same`; the decoder stays plain.",
    )
    skips: Literal["plain", "nested"] = Field(
        "plain",
        description="`plain`: each decoder level concatenates its level's (centre-cropped) encoder map; `nested`: "
        "UNet++ (Zhou et al. 2018), a grid of nodes X(i, j) along each skip pathway, each a decoder block on the "
        "concatenation of every earlier node of its row (centre-cropped) and the up-sampled node below; "
        "`deep_supervision` puts heads on the top row's nodes, and `UNet.pruned(k)` keeps the first k columns.",
    )
    skip_gate: Literal["none", "attention", "grid_attention"] = Field(
        "none",
        description="An additive attention gate on each skip connection (Oktay et al. 2018): the skip is multiplied "
        "by a sigmoid map computed from it and a gating signal before the concatenation. `attention`: MONAI's "
        "AttentionUnet gate (gating signal: the up-sampled map; 1×1 convolutions of both, each with the network's "
        "norm, added, ReLU, a 1-channel 1×1 convolution, norm, sigmoid); `grid_attention`: Oktay et al.'s "
        "published grid gate (gating signal: the map below, before up-sampling; the skip brought to its grid by a "
        "strided convolution without bias, the map linearly up-sampled back, then a 1×1 convolution and norm).",
    )
    gate_levels: list[int] | None = Field(
        None,
        description="Levels whose skip connections are gated (0: the top); default every level. Oktay et al.'s "
        "published network: [1, 2, 3].",
    )
    gate_reduction: int = Field(
        2, ge=1, le=64,
        description="The gate's inner channels: the skip's channels divided by this (MONAI: 2; Oktay et al.'s "
        "published networks: 1).",
    )
    up_kernel_size: int | None = Field(
        None, ge=1, le=15,
        description="Kernel of the transposed up-convolution (default: the up-sampling factor, unpadded, so the "
        "kernels do not overlap). An odd kernel is padded by (kernel − 1)/2, and by factor − 1 more at the far end, "
        "so that the map is exactly factor × as large (MONAI's AttentionUnet: 3); it needs padding: same. An even "
        "one must be the factor.",
    )
    up_norm_act: bool = Field(
        False,
        description="The network's norm and activation after each up-convolution (MONAI's AttentionUnet).",
    )
    decoder_norm: Literal["none", "batch", "instance", "group", "layer"] | None = Field(
        None, description="Normalisation in the decoder's blocks (default: `norm`).",
    )
    decoder_norm_affine: bool = Field(
        True,
        description="Whether the decoder's norms learn a scale and shift (MONAI's AttentionUnet: an instance norm "
        "without).",
    )
    decoder_activation: Literal["relu", "leaky_relu", "elu", "gelu", "silu", "prelu"] | None = Field(
        None, description="Activation in the decoder's blocks (default: `activation`; MONAI's AttentionUnet: prelu).",
    )
    deep_supervision: int = Field(
        0, ge=0, le=11,
        description="Auxiliary 1×1 heads on this many decoder levels below the top (nnU-Net: depth − 2), or with "
        "`skips: nested` on the top row's first nodes X(0, 1), X(0, 2), ... (UNet++). In training mode the "
        "network returns a list, highest resolution first; in eval mode the main output only.",
    )
    gates_per_level: int = Field(
        1, ge=1, le=2,
        description="Attention gates per gated skip (`grid_attention`): 2 is Oktay et al.'s MultiAttentionBlock, two "
        "gates on the same skip and gating signal, their outputs concatenated and combined by a 1×1 convolution, "
        "the norm and the activation.",
    )
    gating_conv: bool = Field(
        False,
        description="The deepest gate's gating signal (`grid_attention`: the bottleneck's map) first passes a 1×1 "
        "convolution, the norm and the activation (Oktay et al.'s UnetGridGatingSignal3).",
    )
    fused_heads: bool = Field(
        False,
        description="Oktay et al.'s deep supervision as the network's output: a 1×1 convolution to the classes on "
        "every decoder level's map, each linearly up-sampled to the top level's size, concatenated (top first), "
        "then a 1×1 convolution to the classes in place of the head. Needs padding: same and plain skips.",
    )
    input_size: list[int] | None = Field(
        None,
        description="Default input size, one value per spatial axis. Default: the smallest valid size from "
        "572 (132 in 3D) up.",
    )

    @field_validator("channels")
    @classmethod
    def _channels_match_depth(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value is None:
            return value
        if info.data.get("width") is not None:
            raise ValueError("give either `width` or `channels`, not both")
        depth, convs = info.data.get("depth"), info.data.get("convs_per_level")
        if depth is not None and len(value) != depth:
            raise ValueError(f"has {len(value)} entries but depth is {depth}; give one per level")
        for index, entry in enumerate(value):
            widths = entry if isinstance(entry, list) else [entry]
            if isinstance(entry, list) and convs is not None and len(entry) != convs:
                raise ValueError(
                    f"entry {index} lists {len(entry)} widths but convs_per_level is {convs}; give one per convolution"
                )
            for width in widths:
                if not 1 <= width <= 65536:
                    raise ValueError(f"entry {index}: width {width}; each must be between 1 and 65536")
        return value

    @field_validator("kernel_size")
    @classmethod
    def _kernel_is_odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd: an even kernel has no centre, so crops cannot be central")
        return value

    @field_validator("kernel_sizes", "pool_sizes")
    @classmethod
    def _per_level_per_axis(cls, value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        if value is None:
            return value
        depth, dims = info.data.get("depth"), info.data.get("spatial_dims")
        kernels = info.field_name == "kernel_sizes"
        if depth is not None:
            expected = depth if kernels else depth - 1
            if len(value) != expected:
                what = "one per level" if kernels else "one per max-pool (depth − 1)"
                raise ValueError(f"has {len(value)} entries but depth is {depth}; give {expected}, {what}")
        for index, entry in enumerate(value):
            sizes = entry if isinstance(entry, list) else [entry]
            if isinstance(entry, list) and dims is not None and len(entry) != dims:
                raise ValueError(f"entry {index} has {len(entry)} sizes but spatial_dims is {dims}; give one per axis")
            for size in sizes:
                if kernels and (size < 1 or size > 15 or size % 2 == 0):
                    raise ValueError(f"entry {index}: kernel size {size}; kernels must be odd, from 1 to 15")
                if not kernels and not 1 <= size <= 8:
                    raise ValueError(f"entry {index}: pool factor {size}; factors must be from 1 to 8")
        return value

    @field_validator("interpolation")
    @classmethod
    def _interpolation_needs_upsample(cls, value: str, info: ValidationInfo) -> str:
        if value != "nearest" and info.data.get("upsampling") == "transpose":
            raise ValueError("only applies to upsampling 'upsample_conv'; remove it or change `upsampling`")
        return value

    @field_validator("padding_mode")
    @classmethod
    def _padding_mode_is_used(cls, value: str, info: ValidationInfo) -> str:
        upsampling = info.data.get("upsampling")
        if value != "zeros" and info.data.get("padding") == "valid" and upsampling in ("transpose", "interpolate"):
            raise ValueError(
                f"'{value}' has no effect: with padding 'valid' and upsampling '{upsampling}' no convolution pads; "
                "remove it"
            )
        return value

    @field_validator("norm_groups")
    @classmethod
    def _groups_divide_widths(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("norm") != "group":
            return value
        try:
            widths = _all_widths(info.data)
        except (KeyError, TypeError):
            return value  # an earlier field failed; it has its own error
        bad = sorted({w for w in widths if w % value})
        if bad:
            raise ValueError(
                f"{value} groups do not divide the widths {', '.join(map(str, bad))}; choose a divisor of every width"
            )
        return value

    @field_validator("dropout_at")
    @classmethod
    def _dropout_rate_and_place(cls, value: str, info: ValidationInfo) -> str:
        rate = info.data.get("dropout")
        if rate is None:
            return value
        if value == "none" and rate > 0:
            raise ValueError(f"is 'none' but dropout is {rate}; say where: bottleneck or every_level")
        if value != "none" and rate == 0:
            raise ValueError(f"is '{value}' but dropout is 0; give a rate such as 0.5")
        return value

    @field_validator("downsampling")
    @classmethod
    def _strided_valid_convs_centre(cls, value: str, info: ValidationInfo) -> str:
        if value == "conv" and info.data.get("block") == "residual":
            raise ValueError("'conv' does not combine with `block: residual` (its shortcut does not stride); "
                             "for nnU-Net's residual encoder give `encoder_blocks`")
        if value != "conv" or info.data.get("padding") != "valid":
            return value
        data = info.data
        try:
            pairs = {(k, f) for level in range(1, data["depth"])
                     for k, f in zip(_level_kernel(data, level), _level_pool(data, level - 1))}
        except (KeyError, TypeError, IndexError):
            return value  # an earlier field failed; it has its own error
        bad = sorted((k, f) for k, f in pairs if (k - f) % 2)
        if bad:
            k, f = bad[0]
            raise ValueError(
                f"'conv' with padding 'valid' needs kernel − factor even at every level; kernel {k} with factor {f} "
                "puts the strided map half a pixel off its skip connection, so no crop is central: use padding "
                "'same', odd pool factors, or maxpool"
            )
        return value

    @field_validator("encoder_blocks")
    @classmethod
    def _residual_encoder(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return value
        data = info.data
        depth = data.get("depth")
        if depth is not None and len(value) != depth:
            raise ValueError(f"has {len(value)} entries but depth is {depth}; give one block count per level")
        for index, count in enumerate(value):
            if not 1 <= count <= 64:
                raise ValueError(f"entry {index}: {count} blocks; give from 1 to 64 per level")
        if data.get("downsampling") != "conv":
            raise ValueError("needs downsampling: conv (the first block of each level strides, as in nnU-Net)")
        if data.get("padding") != "same":
            raise ValueError("needs padding: same (a strided block and its average-pooled shortcut differ in size "
                             "unpadded)")
        if data.get("block") != "plain":
            raise ValueError("replaces `block: residual`; leave `block` out")
        if any(isinstance(entry, list) for entry in data.get("channels") or []):
            raise ValueError("takes one width per level in `channels`, not one per convolution")
        return value

    @field_validator("skip_gate")
    @classmethod
    def _gates_on_plain_skips(cls, value: str, info: ValidationInfo) -> str:
        if value != "none" and info.data.get("skips") == "nested":
            raise ValueError("gates plain skip connections; it does not combine with skips: nested")
        if value != "none" and info.data.get("depth") == 1:
            raise ValueError("needs a skip connection to gate; depth 1 has none")
        return value

    @field_validator("gate_levels")
    @classmethod
    def _gated_levels_exist(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return value
        if info.data.get("skip_gate", "none") == "none":
            raise ValueError("has no effect without skip_gate; give skip_gate: attention or grid_attention")
        depth = info.data.get("depth")
        if not value:
            raise ValueError("is empty; give the levels to gate, or leave it out to gate every level")
        for level in value:
            if depth is not None and not 0 <= level <= depth - 2:
                raise ValueError(f"level {level} has no skip connection; levels 0 to {depth - 2} have one")
        if len(set(value)) != len(value):
            raise ValueError("lists a level twice; give each level once")
        return value

    @field_validator("gate_reduction")
    @classmethod
    def _reduction_is_used(cls, value: int, info: ValidationInfo) -> int:
        if value != 2 and info.data.get("skip_gate", "none") == "none":
            raise ValueError("has no effect without skip_gate; give skip_gate: attention or grid_attention")
        return value

    @field_validator("up_kernel_size")
    @classmethod
    def _up_kernel_fits(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        data = info.data
        if data.get("upsampling") != "transpose":
            raise ValueError("sets the transposed up-convolution's kernel; it needs upsampling: transpose")
        try:
            factors = {f for level in range(data["depth"] - 1) for f in _level_pool(data, level)}
        except (KeyError, TypeError, IndexError):
            return value  # an earlier field failed; it has its own error
        if value % 2 == 0:
            if factors <= {value}:
                return value
            raise ValueError(
                "must be odd, or the up-sampling factor: an odd kernel is padded by (kernel − 1)/2 on each side, "
                "which needs a centre"
            )
        if data.get("padding") != "same":
            raise ValueError(
                "needs padding: same; an odd kernel is padded at the map's edges (or leave it out: the kernel is "
                "then the factor, unpadded)"
            )
        return value

    @field_validator("up_norm_act")
    @classmethod
    def _up_has_a_conv(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("upsampling") == "interpolate":
            raise ValueError("has no effect with upsampling 'interpolate': no convolution to follow; remove it")
        return value

    @field_validator("decoder_norm")
    @classmethod
    def _decoder_groups_divide_widths(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value != "group":
            return value
        groups = info.data.get("norm_groups")
        try:
            widths = {_conv_widths(info.data, level)[-1] for level in range(info.data["depth"] - 1)}
        except (KeyError, TypeError):
            return value  # an earlier field failed; it has its own error
        bad = sorted({w for w in widths if groups and w % groups})
        if bad:
            raise ValueError(f"group: norm_groups {groups} does not divide the decoder's widths "
                             f"{', '.join(map(str, bad))}; choose a divisor of every width")
        return value

    @field_validator("decoder_norm_affine")
    @classmethod
    def _decoder_affine_is_used(cls, value: bool, info: ValidationInfo) -> bool:
        norm = info.data.get("decoder_norm") or info.data.get("norm")
        if not value and norm == "none":
            raise ValueError("has no effect: the decoder has no norm; remove it or give decoder_norm")
        return value

    @field_validator("deep_supervision")
    @classmethod
    def _heads_fit(cls, value: int, info: ValidationInfo) -> int:
        depth = info.data.get("depth")
        nested = info.data.get("skips") == "nested"
        if value and depth is not None and value > depth - 2:
            where = "nodes on the top row before the last" if nested else "decoder levels below the top"
            raise ValueError(
                f"{value} heads but depth {depth} has {max(depth - 2, 0)} {where}; give at most {max(depth - 2, 0)}"
            )
        if value and info.data.get("output") == "same":
            why = ("the auxiliary heads are not cropped back to the input's size" if nested
                   else "a head below the top has no exact crop back to the input's size")
            raise ValueError(f"needs output: crop ({why})")
        return value

    @field_validator("gates_per_level", "gating_conv")
    @classmethod
    def _oktay_gate_parts(cls, value: Any, info: ValidationInfo) -> Any:
        if value not in (1, False) and info.data.get("skip_gate") != "grid_attention":
            raise ValueError("is a part of Oktay et al.'s grid gate; give skip_gate: grid_attention")
        if info.field_name == "gating_conv" and value:
            depth, levels = info.data.get("depth"), info.data.get("gate_levels")
            if depth is not None and levels is not None and depth - 2 not in levels:
                raise ValueError(f"feeds the deepest gate (level {depth - 2}), which gate_levels {levels} leaves out")
        return value

    @field_validator("fused_heads")
    @classmethod
    def _fused_heads_fit(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            return value
        if info.data.get("padding") != "same":
            raise ValueError("needs padding: same (each level's output is up-sampled to the top level's size)")
        if info.data.get("skips") == "nested":
            raise ValueError("needs skips: plain (UNet++ has heads of its own: deep_supervision)")
        if info.data.get("deep_supervision"):
            raise ValueError("replaces the auxiliary heads: give deep_supervision: 0")
        if info.data.get("depth") == 1:
            raise ValueError("needs a decoder level; depth 1 has none")
        return value

    @field_validator("input_size")
    @classmethod
    def _input_size_matches_dims(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if value is None:
            return value
        dims = info.data.get("spatial_dims")
        if dims is not None and len(value) != dims:
            raise ValueError(f"has {len(value)} values but spatial_dims is {dims}; give one size per axis")
        for size in value:
            if not 1 <= size <= 1_000_000:
                raise ValueError(f"{size} is out of range; each size must be between 1 and 1000000")
        return value

    def conv_widths(self, level: int) -> tuple[int, ...]:
        """Output channels of each convolution of encoder level ``level`` (0 = top, ``depth - 1`` = bottleneck)."""
        return _conv_widths(self.model_dump(), level)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Output channels of each level, top (full resolution) to bottom (bottleneck)."""
        return tuple(self.conv_widths(level)[-1] for level in range(self.depth))

    @property
    def uses_conv_bias(self) -> bool:
        """Whether the block convolutions have a bias (resolves the ``None`` default of ``conv_bias``)."""
        return self.norm == "none" if self.conv_bias is None else self.conv_bias

    def kernel(self, level: int) -> tuple[int, ...]:
        """Kernel size per axis at ``level`` (encoder and decoder alike)."""
        fields = {"kernel_sizes": self.kernel_sizes, "kernel_size": self.kernel_size, "spatial_dims": self.spatial_dims}
        return _level_kernel(fields, level)

    def pool(self, level: int) -> tuple[int, ...]:
        """Down-sampling (and up-sampling) factor per axis between ``level`` and ``level + 1``."""
        return _level_pool({"pool_sizes": self.pool_sizes, "spatial_dims": self.spatial_dims}, level)

    @property
    def level_decoder_convs(self) -> int:
        """Convolutions in each decoder level's block."""
        return self.convs_per_level if self.decoder_convs is None else self.decoder_convs

    def replace(self, **changes: Any) -> UNetSpec:
        """Return a copy with some fields changed, validated again.

        Args:
            **changes: field names and their new values.

        Returns:
            The new spec.

        Raises:
            SpecError: when the result is not a valid spec.
        """
        data = self.model_dump(exclude_unset=True)
        data.update(changes)
        return spec_from_dict(data, source=f"{self.name} (replace)")

    def to_yaml(self) -> str:
        """The spec as YAML text, with only the fields that differ from the defaults."""
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def _level_kernel(data: dict[str, Any], level: int) -> tuple[int, ...]:
    """Kernel per axis at ``level`` from (possibly partly validated) field data."""
    if data.get("kernel_sizes") is None:
        return (data["kernel_size"],) * data["spatial_dims"]
    return _per_axis(data["kernel_sizes"][level], data["spatial_dims"])


def _level_pool(data: dict[str, Any], level: int) -> tuple[int, ...]:
    """Pool factor per axis below ``level`` from (possibly partly validated) field data."""
    if data.get("pool_sizes") is None:
        return (2,) * data["spatial_dims"]
    return _per_axis(data["pool_sizes"][level], data["spatial_dims"])


def _per_axis(entry: int | list[int], dims: int) -> tuple[int, ...]:
    return tuple(entry) if isinstance(entry, list) else (entry,) * dims


def _conv_widths(data: dict[str, Any], level: int) -> tuple[int, ...]:
    """Widths of one level's convolutions from (possibly partly validated) field data."""
    convs = data["convs_per_level"]
    channels = data.get("channels")
    if channels is not None:
        entry = channels[level]
        return tuple(entry) if isinstance(entry, list) else (entry,) * convs
    width = 64 if data.get("width") is None else data["width"]
    value = int(round(width * data.get("growth", 2.0) ** level))
    if data.get("max_channels") is not None:
        value = min(value, data["max_channels"])
    return (value,) * convs


def _all_widths(data: dict[str, Any]) -> set[int]:
    """Every width a norm sees: each convolution of each level (the decoder's are the levels' widths)."""
    return {w for level in range(data["depth"]) for w in _conv_widths(data, level)}


#: Accepted values of each option field, for "did you mean" suggestions.
_CHOICES: dict[str, tuple[str, ...]] = {
    name: tuple(str(arg) for arg in typing.get_args(literal))
    for name, field in UNetSpec.model_fields.items()
    for literal in (field.annotation, *typing.get_args(field.annotation))  # a Literal, or a Literal or None
    if typing.get_origin(literal) is Literal
}


def spec_from_dict(data: Any, source: str = "<spec>") -> UNetSpec:
    """Validate plain data (as read from YAML or JSON) into a :class:`UNetSpec`.

    Args:
        data: a mapping of field names to values.
        source: what to call the data in error messages (a file name).

    Returns:
        The validated spec.

    Raises:
        SpecError: one line per problem, each naming the source and the field.
    """
    if not isinstance(data, dict):
        kind = type(data).__name__
        kind = "a list" if isinstance(data, list) else f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"
        raise SpecError(f"{source}: a spec is a mapping of fields (e.g. 'depth: 5'), got {kind}")
    try:
        return UNetSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = _one_union_branch(exc.errors(), data)
        raise SpecError("\n".join(_describe(error, source) for error in errors)) from None


#: pydantic's names for the branches of ``int | list[int]`` (``PerAxis``) in an error's location.
_UNION_BRANCHES = ("int", "list[int]")


def _one_union_branch(errors: list[Any], data: dict[str, Any]) -> list[Any]:
    """Keep, for an ``int | list[int]`` entry, the errors of the branch the user meant (a list or not), not both."""
    kept = []
    for error in errors:
        loc = tuple(error["loc"])
        at = next((i for i, part in enumerate(loc) if part in _UNION_BRANCHES), None)
        entry: Any = data
        try:
            for part in loc[:at]:
                entry = entry[part]
        except (KeyError, IndexError, TypeError):
            at = None
        if at is None:
            kept.append(error)
            continue
        if isinstance(entry, list) != (loc[at] == "list[int]"):
            continue  # the other branch's complaint: 'not a list' about a number, 'not an int' about a list
        error = {**error, "loc": loc[:at] + loc[at + 1 :]}
        if error["type"] == "int_type" and loc[at] == "int":
            error["msg"] = "Input should be an integer or a list of integers"
        kept.append(error)
    return kept


def _loc_part(part: Any) -> str:
    """A part of an error's location as the user wrote it, quoted if it would break the line or the path."""
    if isinstance(part, int) and not isinstance(part, bool):
        return str(part)
    if isinstance(part, str) and part.isprintable() and part.strip() == part and part and len(part) <= 60:
        return part
    return _show(part)


def _describe(error: Any, source: str) -> str:
    """One line for one pydantic error: ``source: field: what (got x)[ (did you mean y?)]``."""
    loc = ".".join(_loc_part(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    value = error.get("input")
    field = str(error["loc"][0]) if error["loc"] else ""
    if kind == "invalid_key":
        return f"{source}: key {_show(value)}: a field name is text, such as 'depth'"
    if kind == "extra_forbidden":
        hint = did_you_mean(field, UNetSpec.model_fields)
        return f"{source}: {loc}: unknown field{hint or '; see the spec fields in the README'}"
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    if kind == "literal_error" and field in _CHOICES:
        choices = _CHOICES[field]
        message = f"expected {', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else message
        return f"{source}: {loc}: got {_show(value)}; {message}{did_you_mean(value, choices)}"
    hint = "; write true or false" if kind.startswith("bool") else ""
    return f"{source}: {loc}: {message[0].lower() + message[1:]} (got {_show(value)}){hint}"


def _show(value: Any) -> str:
    try:
        text = repr(value)  # repr escapes newlines and other line breaks: the message stays one line
    except ValueError:  # an int too long to print
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 60 else text[:57] + "..."


def parse_spec(text: str, source: str = "<text>") -> UNetSpec:
    """Parse and validate a spec from YAML text.

    Args:
        text: the YAML document.
        source: what to call it in error messages.

    Returns:
        The validated spec.

    Raises:
        SpecError: when the YAML or the spec is invalid.
    """
    return spec_from_dict(parse_yaml(text, source), source)


def preset_names() -> list[str]:
    """Names of the presets shipped with unetgen (``paper``, ...)."""
    folder = resources.files("unetgen.presets")
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def preset(name: str) -> UNetSpec:
    """Load a preset shipped with unetgen by name.

    Args:
        name: a preset name, e.g. ``"paper"`` (see :func:`preset_names`).

    Returns:
        The preset's spec.

    Raises:
        SpecError: when there is no such preset.
    """
    names = preset_names()
    if name not in names:
        raise SpecError(f"no preset named '{name}'; presets: {', '.join(names)}{did_you_mean(name, names)}")
    resource = resources.files("unetgen.presets") / f"{name}.yaml"
    return parse_spec(resource.read_text(encoding="utf-8"), source=f"preset '{name}'")


def load_spec(source: str | Path | UNetSpec) -> UNetSpec:
    """Load a spec from a YAML file or a preset name.

    A path that exists is read as a file; otherwise a bare name (no ``/``, no ``.yaml``) is looked up among the
    presets.

    Args:
        source: a file path, a preset name, or a spec (returned as it is).

    Returns:
        The validated spec.

    Raises:
        SpecError: when the file or preset does not exist or is not a valid spec.
    """
    if isinstance(source, UNetSpec):
        return source
    path = Path(source)
    try:
        exists = path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        raise SpecError(f"{str(source)[:200]!r}: not a file name this system can open") from None
    if exists:
        return spec_from_dict(read_yaml_file(path), str(source))
    text = str(source) if str(source).isprintable() else repr(str(source))
    looks_like_name = "/" not in text and "\\" not in text and path.suffix not in (".yaml", ".yml")
    if looks_like_name and text in preset_names():
        return preset(text)
    if looks_like_name:
        names = preset_names()
        raise SpecError(
            f"{text}: no such file or preset; presets: {', '.join(names)}{did_you_mean(text, names)}"
        )
    raise SpecError(f"{text}: no such file")
