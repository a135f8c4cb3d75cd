"""Plan → SVG: the network drawn as Figure 1 of Ronneberger et al. 2015. Pure text, no torch.

One bar per feature map: the channels above it, the spatial size beside it (rotated, as in the paper), the encoder
going down the left, the decoder up the right, and arrows coloured by operation with a legend. Every number comes
from the :class:`~unetgen.planning.plan.Plan`, so the picture shows the network the user configured at the size they gave:
its depth and widths, the crop of each skip connection (a dashed box on the encoder map and a label on the
copy-and-crop arrow), the mirror padding and output crop of ``output: same``, the up-sampling kind and the norm.

Bars are scaled so that any network stays legible: bar height follows the logarithm of the level's size (linear
within a level, so a crop is drawn to scale), bar width the logarithm of the channel count, and text never shrinks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UNetGenError
from ..planning.plan import Layer, Plan, make_plan
from ..planning.sizes import level_name
from ..spec.fields import UNetSpec, load_spec
from ..text import size_text as _fmt

_FONT = "Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"
_CHANNEL_FONT = 12  # channel counts above bars
_SIZE_FONT = 11  # spatial sizes beside bars
_NOTE_FONT = 11  # arrow labels, captions, legend
_MARGIN = 20
_ARROW_MIN = 16  # the shortest arrow between two bars
_ROW_GAP = 46  # between the levels: a channel label and a vertical arrow
_HEIGHT_MAX = 190  # bar height of the largest level; smaller levels shrink logarithmically
_HEIGHT_MIN = 56

#: Arrow colours by operation, as in the paper's Figure 1 (mirror and output crop are ours).
_COLOURS = {
    "conv": "#1f4e9c",
    "copy": "#8a8a8a",
    "pool": "#d62728",
    "up": "#2ca02c",
    "head": "#119e9e",
    "mirror": "#8e44ad",
    "crop": "#e67e22",
}
_GATE = "#c0392b"  # the attention gates' circles (no arrow of their own)
#: An attention gate's multiplication: ``decoder.2.gate.mul``, or ``decoder.2.gate.gates.0.mul`` (two per level).
_GATE_MUL = re.compile(r"\.gate(\.gates\.\d+)?\.mul$")
_BAR = 14  # the width of UNet++'s input and output bars
_FILLS = {"map": "#b9d3ee", "copy": "#ffffff", "input": "#d9d9d9", "output": "#a8e0dc"}
_ACTIVATIONS = {
    "relu": "ReLU", "leaky_relu": "leaky ReLU", "elu": "ELU", "gelu": "GELU", "silu": "SiLU", "prelu": "PReLU"
}
_STROKE = "#2a4a75"
_TEXT = "#1a1a1a"
_GREY = "#555555"
_CROP = "#555555"

# Characters XML 1.0 cannot carry at all (control characters, lone surrogates): dropped from user text.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass
class _Bar:
    """One feature map: its channels, spatial size and where it is drawn."""

    channels: int
    size: tuple[int, ...]
    kind: str  # a key of _FILLS
    label: str | None  # the channel label (None: not shown, e.g. a max-pool output, as in the paper)
    arrow: tuple[str, str | None] | None = None  # horizontal arrow from the previous bar: (operation, label)
    caption: str | None = None  # a word under the bar ("input", "output")
    label_left: bool = False  # channel label left of centre, clear of a vertical arrow leaving the bar's top
    x: float = 0.0
    w: float = 0.0
    h: float = 0.0
    cy: float = 0.0

    @property
    def top(self) -> float:
        return self.cy - self.h / 2

    @property
    def bottom(self) -> float:
        return self.cy + self.h / 2

    @property
    def centre(self) -> float:
        return self.x + self.w / 2

    @property
    def right(self) -> float:
        return self.x + self.w


@dataclass
class _Level:
    """One row of the figure: a level's encoder bars (left) and decoder bars (right)."""

    encoder: list[_Bar] = field(default_factory=list)
    decoder: list[_Bar] = field(default_factory=list)
    crop: tuple[int, ...] = ()
    cy: float = 0.0
    height: float = 0.0


class SVG(str):
    """SVG text that a notebook shows as the picture (Jupyter calls ``_repr_svg_``)."""

    def _repr_svg_(self) -> str:
        return str(self)


def draw(spec_or_plan: UNetSpec | Plan | str | Path, input_size: tuple[int, ...] | list[int] | None = None) -> SVG:
    """Draw a network as the U-Net paper's Figure 1, as SVG text.

    Args:
        spec_or_plan: a spec, a plan, a preset name or a YAML file.
        input_size: spatial input size, one value per axis; default: the plan's size, else the spec's default.

    Returns:
        The SVG document (UTF-8 text, no XML declaration), ready to write to a ``.svg`` file; a notebook shows it
        as the picture.

    Raises:
        SpecError: when a name or file does not hold a valid spec.
        SizeError: when the network cannot take ``input_size``.
    """
    if isinstance(spec_or_plan, Plan):
        plan = spec_or_plan if input_size is None else make_plan(spec_or_plan.spec, input_size)
    else:
        plan = make_plan(load_spec(spec_or_plan), input_size)
    if any(layer.name.startswith("nested.") for layer in plan.layers):
        return SVG(_NestedFigure(plan).svg())
    return SVG(_Figure(plan).svg())


def svg_size(svg: str) -> tuple[int, int]:
    """The width and height, in pixels, of an SVG written by :func:`draw`.

    Args:
        svg: the SVG text.

    Returns:
        ``(width, height)``.

    Raises:
        UNetGenError: when the text does not start with an ``<svg`` element that has integer ``width`` and
            ``height``.
    """
    head = re.match(r'\s*<svg\b[^>]*?\bwidth="(\d+)"[^>]*?\bheight="(\d+)"', svg)
    if not head:
        raise UNetGenError("svg: no <svg width=... height=...> element at the start; give the text draw() returns")
    return int(head.group(1)), int(head.group(2))


def _document(canvas: _Canvas, width: int, height: int, label: str) -> str:
    """The SVG file: the arrow markers, a white page, then the canvas's layers (arrows under shapes under text)."""
    markers = "".join(
        f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="5" markerHeight="5" '
        f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        for kind, colour in _COLOURS.items()
    )
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="{_FONT}" role="img" aria-label="{_text(label)}">',
            f"<title>{_text(label)}</title>",
            f"<defs>{markers}</defs>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
            *canvas.arrows,
            *canvas.shapes,
            *canvas.texts,
            *canvas.legend,
            "</svg>",
            "",
        ]
    )


def _text(value: str) -> str:
    """User or generated text, safe inside an XML element or a double-quoted attribute."""
    value = _NOT_XML.sub("", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _text_width(text: str, font: float) -> float:
    """A generous estimate of the rendered width (Arial/DejaVu metrics), used to leave room for labels."""
    width = 0.0
    for char in text:
        if char in " il.,:;|!'()[]/-":
            width += 0.34
        elif char in "mwMW—→":
            width += 0.95
        elif char.isupper():
            width += 0.72
        else:
            width += 0.62
    return width * font


def _bar_width(channels: int) -> float:
    # Logarithmic, so 1 channel is a sliver and 65,536 is still a bar, not a wall.
    return round(5 + 2.6 * math.log2(max(channels, 1)), 1)


def _steps(start: tuple[int, ...], end: tuple[int, ...], count: int) -> list[tuple[int, ...]]:
    """The maps after each of ``count`` convolutions from ``start`` to ``end``: each removes the same amount."""
    return [tuple(a - (a - b) // count * (index + 1) if index < count - 1 else b for a, b in zip(start, end))
            for index in range(count)]


def _extent(size: tuple[int, ...]) -> float:
    """One length for a map of any dimension (the geometric mean of its sides), for bar heights."""
    return math.prod(size) ** (1 / len(size))


def _per_level(values: list[tuple[int, ...]]) -> str:
    """``3×3``, or ``3×3×3 (level 0: 1×3×3)`` when some levels differ from the most common value."""
    if not values:
        return ""
    common = max(values, key=values.count)
    odd = [f"level {level}: {_fmt(value)}" for level, value in enumerate(values) if value != common]
    return _fmt(common) + (f" ({', '.join(odd)})" if odd else "")


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class _Figure:
    """Lays out one plan's bars, arrows and labels, then writes them as SVG."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.dims = len(plan.input_size)
        self.layers = plan.layers
        self.levels = self._levels()
        self._heights()
        self._place_x()
        self._place_y()

    # --- what to draw ------------------------------------------------------------------------------------------

    def _levels(self) -> list[_Level]:
        plan = self.plan
        depth = plan.depth
        cin = plan.input_shape[0]
        levels = [_Level() for _ in range(depth)]
        first = levels[0].encoder
        if any(a or b for a, b in plan.mirror):
            pads = list(dict.fromkeys(f"{a}+{b}" for a, b in plan.mirror))  # per axis, once if all alike
            first.append(_Bar(cin, plan.input_size, "input", str(cin), caption="input"))
            first.append(
                _Bar(
                    cin,
                    plan.core_input_size,
                    "input",
                    str(cin),
                    arrow=("mirror", "mirror " + ", ".join(pads)),
                )
            )
        else:
            first.append(_Bar(cin, plan.core_input_size, "input", str(cin), caption="input"))
        encoder = [plan.block(level_name(level, depth)).shape for level in range(depth)]
        for level, out in enumerate(encoder):
            bars = levels[level].encoder
            convs = self._convs(level_name(level, depth))
            if level == 0:
                start = plan.core_input_size
            elif self._pool(level) is None:  # the first convolution strides: no pooled map of its own
                for conv in convs:
                    bars.append(_Bar(conv.shape[0], conv.shape[1:], "map", str(conv.shape[0]), arrow=("conv", None)))
                continue
            else:  # the max-pooled map, without a channel label, as in the paper
                above = encoder[level - 1]
                start = plan.layer(f"{level_name(level, depth)}.pool").shape[1:]
                bars.append(_Bar(above[0], start, "map", None))
            widths = [conv.shape[0] for conv in convs]
            for width, size in zip(widths, _steps(start, out[1:], len(widths))):
                bars.append(_Bar(width, size, "map", str(width), arrow=("conv", None)))
        for skip in plan.skips:
            level = skip.level
            up = plan.block(f"decoder.{level}.up").shape
            copied = plan.block(f"decoder.{level}.crop").shape
            out = plan.block(f"decoder.{level}.convs").shape
            levels[level].crop = skip.crop
            bars = levels[level].decoder
            bars.append(_Bar(copied[0], skip.target, "copy", str(copied[0] + up[0])))  # labelled with the concat
            bars.append(_Bar(up[0], skip.target, "map", None))
            for size in _steps(skip.target, out[1:], len(self._convs(f"decoder.{level}.convs"))):
                bars.append(_Bar(out[0], size, "map", str(out[0]), arrow=("conv", None)))
        head = plan.block("head").shape
        tail = levels[0].decoder if depth > 1 else levels[0].encoder
        caption = "output" if plan.final_activation == "none" else f"output ({plan.final_activation})"
        crop_words = None
        if any(a or b for a, b in plan.output_crop):
            crop_words = "crop " + ", ".join(dict.fromkeys(f"{a}+{b}" for a, b in plan.output_crop))
        label = str(head[0])
        tail.append(_Bar(head[0], head[1:], "output", label, ("head", None), None if crop_words else caption))
        if crop_words:
            tail.append(_Bar(head[0], plan.output_size, "output", label, ("crop", crop_words), caption))
        # A vertical arrow leaves the top of each level's last decoder bar (the bottleneck's last bar): keep its
        # channel label clear of it.
        for level in range(1, depth):
            bars = levels[level].decoder if level < depth - 1 else levels[level].encoder
            bars[-1].label_left = True
        return levels

    def _convs(self, block: str) -> list[Layer]:
        """The block's convolutions in a row (not a residual block's projection or shortcut)."""
        return [layer for layer in self.plan.block(block).layers
                if layer.kind == "conv" and not layer.name.endswith("projection") and ".skip." not in layer.name]

    def _first(self, kind: str) -> Layer | None:
        """The first layer of a kind outside the attention gates, or None."""
        return next((layer for layer in self.layers if layer.kind == kind and ".gate." not in layer.name), None)

    def _pool(self, level: int) -> Layer | None:
        """The pooling into ``level``, or None where the level's first convolution strides."""
        name = f"{level_name(level, self.plan.depth)}.pool"
        return next((layer for layer in self.layers if layer.name == name), None)

    def _down_words(self) -> str:
        """How the encoder goes down a level, e.g. ``max pool 2×2`` or ``strided conv 2×2``."""
        depth = self.plan.depth
        strides = []
        for level in range(1, depth):
            pool = self._pool(level)
            strides.append(pool.stride if pool else self._convs(level_name(level, depth))[0].stride)
        pool = self._pool(1) if depth > 1 else None
        what = "strided conv" if pool is None else "max pool" if pool.kind == "max_pool" else "average pool"
        return f"{what} {_per_level(strides)}"

    def _up_kind(self) -> str:
        """``transpose``, ``upsample_conv`` or ``interpolate``, from the up-sampling layers."""
        upsample = self._first("upsample")
        if upsample is None:
            return "transpose"
        return "interpolate" if upsample.name.endswith(".up") else "upsample_conv"

    def _gates(self) -> list[Layer]:
        """The attention gates' multiplications (two per level with ``gates_per_level: 2``)."""
        return [layer for layer in self.layers if _GATE_MUL.search(layer.name)]

    def _grid_gates(self) -> bool:
        """Whether the gates are Oktay et al.'s grid gates (their map is up-sampled back to the skip)."""
        return any(_GATE_MUL.search(layer.name.replace(".resample", ".mul")) for layer in self.layers
                   if layer.name.endswith(".resample"))

    def _gate_words(self) -> str | None:
        """The legend of the attention gates, or None without them."""
        gates = self._gates()
        if not gates:
            return None
        levels = ", ".join(sorted({g.name.split(".")[1] for g in gates}))
        if self._grid_gates():
            kind = "2 grid attention gates" if any(".gates.1." in g.name for g in gates) else "grid attention gate"
            return f"{kind} (Oktay): skip × σ(map below, skip by strided conv), levels {levels}"
        return f"attention gate (MONAI): skip × σ(skip, up-sampled map), levels {levels}"

    def _bars(self) -> list[_Bar]:
        return [bar for level in self.levels for bar in (*level.encoder, *level.decoder)]

    # --- sizes -------------------------------------------------------------------------------------------------

    def _heights(self) -> None:
        bars = self._bars()
        longest = max(_text_width(_fmt(bar.size), _SIZE_FONT) for bar in bars)
        floor = max(_HEIGHT_MIN, longest + 10)  # a rotated size label always fits beside its bar
        refs = [max(_extent(bar.size) for bar in (*level.encoder, *level.decoder)) for level in self.levels]
        low, high = math.log(min(refs)), math.log(max(refs))
        top = max(_HEIGHT_MAX, floor)
        for level, ref in zip(self.levels, refs):
            t = (math.log(ref) - low) / (high - low) if high > low else 1.0
            level.height = round(floor + (top - floor) * t, 1)
            for bar in (*level.encoder, *level.decoder):
                # linear within a level, so the crops are drawn to scale
                bar.h = round(max(level.height * _extent(bar.size) / ref, longest + 6), 1)
                bar.w = _bar_width(bar.channels)

    @staticmethod
    def _label_below_arrow(bar: _Bar) -> bool:
        """Whether ``bar``'s rotated size label fits under the arrow coming in at mid-height (as in the paper)."""
        return _text_width(_fmt(bar.size), _SIZE_FONT) + 6 <= bar.h / 2

    def _arrow_end(self, bar: _Bar) -> float:
        """Where an arrow into ``bar`` from the left ends: at the bar, or short of its size label."""
        return bar.x - 4 if self._label_below_arrow(bar) else bar.x - _SIZE_FONT - 10

    def _gap(self, bar: _Bar, label: str | None = None, shortest: float = _ARROW_MIN) -> float:
        """Space before ``bar`` for its incoming arrow (and the arrow's label) and its rotated size label."""
        arrow = max(shortest, _text_width(label, _NOTE_FONT) + 8) if label else shortest
        return max(4 + arrow + (bar.x - self._arrow_end(bar)), _SIZE_FONT + 12)

    def _copy_label(self, level: _Level) -> str | None:
        if not any(level.crop):
            return None
        crop = level.crop
        per_side = str(crop[0]) if len(set(crop)) == 1 else "/".join(str(c) for c in crop)
        return f"crop {per_side} per side"

    def _place_x(self) -> None:
        stretch = 0.0
        for _ in range(2):  # lay out, then widen the bottleneck so every copy-and-crop arrow has room
            self._place_x_once(stretch)
            short = 0.0
            for level in self.levels[:-1]:
                need = self._gap(level.decoder[0], self._copy_label(level), 2 * _ARROW_MIN)
                have = level.decoder[0].x - level.encoder[-1].right
                short = max(short, need - have)
            if short <= 0:
                return
            stretch += short / len(self._convs(level_name(0, self.plan.depth)))

    def _place_x_once(self, stretch: float) -> None:
        def run(bars: list[_Bar], extra: float = 0.0) -> None:
            for before, bar in zip(bars, bars[1:]):
                if bar.arrow is None:  # touching: the copied map and the up-sampled map it is concatenated with
                    bar.x = before.right
                else:
                    bar.x = round(before.right + self._gap(bar, bar.arrow[1]) + extra, 1)

        levels = self.levels
        levels[0].encoder[0].x = _MARGIN + _SIZE_FONT + 8
        run(levels[0].encoder)
        for index in range(1, len(levels)):
            above, bars = levels[index - 1].encoder[-1], levels[index].encoder
            bars[0].x = round(above.centre - bars[0].w / 2, 1)
            run(bars, stretch if index == len(levels) - 1 else 0.0)
        for index in reversed(range(len(levels) - 1)):
            below = levels[index + 1].decoder[-1] if index + 1 < len(levels) - 1 else levels[-1].encoder[-1]
            white, up = levels[index].decoder[:2]
            up.x = round(below.centre - up.w / 2, 1)
            white.x = round(up.x - white.w, 1)
            run(levels[index].decoder[1:])

    def _place_y(self) -> None:
        y = _MARGIN + 22 + 18 * (len(self._titles()) - 1) + 22 + _CHANNEL_FONT + 8
        for index, level in enumerate(self.levels):
            if index:
                y += _ROW_GAP
            level.cy = round(y + level.height / 2, 1)
            for bar in (*level.encoder, *level.decoder):
                bar.cy = level.cy
            y += level.height
            if index == 0 and any(bar.caption for bar in self._bars()):
                y += 6  # captions under the first row's bars

    # --- SVG ---------------------------------------------------------------------------------------------------

    def _words(self) -> dict[str, str]:
        """Legend text per operation, from the plan's layers."""
        plan, dims, depth = self.plan, self.dims, self.plan.depth
        names = [level_name(level, depth) for level in range(depth)]
        kernel = _per_level([self._convs(name)[0].kernel for name in names])
        pool = _per_level([(self._pool(level) or self._convs(names[level])[0]).stride for level in range(1, depth)])
        conv = self._convs(names[0])[0]
        pad = f"same ({conv.mode})" if conv.pads_anything else "valid"
        norm_layer, act_layer = self._first("norm"), self._first("act")
        norm = f", {norm_layer.mode} norm" if norm_layer else ""
        activation = _ACTIVATIONS.get(act_layer.mode, act_layer.mode) if act_layer else ""
        if act_layer and act_layer.mode == "leaky_relu":
            activation += f" {act_layer.value:g}"
        residual = " (residual block)" if self._first("add") else ""
        upsample = self._first("upsample")
        transposed = self._first("conv_transpose")
        if upsample is None and transposed is not None and transposed.kernel != transposed.stride:
            up = f"up-conv {_fmt(transposed.kernel)} stride {pool}, transposed (padded)"
        elif upsample is None:
            up = f"up-conv {pool}, transposed"
        elif self._up_kind() == "interpolate":
            up = f"up-sample ({upsample.mode}) {pool}"
        else:
            up = f"up-sample ({upsample.mode}), conv {pool}"
        cropped = any(any(level.crop) for level in self.levels)
        words = {
            "conv": f"conv {kernel} {pad}{norm}, {activation}{residual}",
            "copy": "copy and crop (centre)" if cropped else "copy",
            "pool": self._down_words(),
            "up": up,
            "head": f"conv {_fmt((1,) * dims)}",
        }
        gate = self._gate_words()
        if gate is not None:
            words["gate"] = gate
        if depth == 1:
            for unused in ("copy", "pool", "up"):
                del words[unused]
        if any(a or b for a, b in self.plan.mirror):
            words["mirror"] = "mirror padding (reflect)"
        if any(a or b for a, b in self.plan.output_crop):
            words["crop"] = "crop to the input's size"
        return words

    def _titles(self) -> list[tuple[str, int, str]]:
        """(text, font size, weight) of the title lines."""
        plan, spec = self.plan, self.spec
        lines = [(_shorten(spec.name, 80), 16, "bold")]
        if spec.description:
            lines.append((_shorten(spec.description, 120), 12, "normal"))
        lines.append(
            (
                f"input {_fmt(plan.input_shape)} → output {_fmt(plan.output_shape)} · "
                f"{plan.conv_layers} conv layers · {plan.parameters:,} parameters",
                12,
                "normal",
            )
        )
        padded = any(layer.kind == "conv" and layer.pads_anything for layer in self.layers)
        norm_layer = self._first("norm")
        options = [f"depth {plan.depth}", f"padding {'same' if padded else 'valid'}"]
        if plan.depth > 1:
            options.append(f"up-sampling {self._up_kind()}")
        options += [f"norm {norm_layer.mode if norm_layer else 'none'}", f"output {'same' if plan.same_output else 'crop'}"]
        if self._first("add"):
            options.append("residual blocks")
        if self._gates():
            design = "grid attention" if self._grid_gates() else "attention"
            options.append(f"{design} gates")
        if any(layer.name == "fused" for layer in self.layers):
            options.append("deep supervision fused into the output")
        if any(layer.name.startswith("nested.") for layer in self.layers):
            options.append("nested skips (UNet++)")
        dropouts = [layer for layer in self.layers if layer.kind == "dropout"]
        if dropouts:
            where = "bottleneck" if len(dropouts) == 1 and dropouts[0].name.startswith("bottleneck") else "every level"
            if any(layer.name[-1].isdigit() for layer in dropouts):  # convs.dropout0, ...: dropout_at every_conv
                where = "every convolution"
            options.append(f"dropout {dropouts[0].value:g} ({where})")
        if plan.final_activation != "none":
            options.append(f"final {plan.final_activation}")
        lines.append((" · ".join(options), 12, "normal"))
        return lines

    def svg(self) -> str:
        """The figure as an SVG document."""
        canvas = _Canvas()
        self._draw_arrows(canvas)
        self._draw_bars(canvas)
        return self._finish(canvas, max(bar.right for bar in self._bars()) + _MARGIN, "U-Net")

    def _finish(self, canvas: _Canvas, width: float, kind: str) -> str:
        """The titles and the legend on ``canvas`` (widening the page to fit them), then the SVG document."""
        y = _MARGIN + 16
        for words, font, weight in self._titles():
            canvas.note(_MARGIN, y, words, anchor="start", font=font, weight=weight)
            width = max(width, _MARGIN + _text_width(words, font) + _MARGIN)
            y += 18 if font <= 12 else 22
        right, bottom = self._draw_legend(canvas, width - _MARGIN)
        page_width, height = math.ceil(max(width, right + _MARGIN)), math.ceil(bottom + _MARGIN)
        plan = self.plan
        label = f"{kind} diagram of {self.spec.name}: input {_fmt(plan.input_shape)}, output {_fmt(plan.output_shape)}"
        return _document(canvas, page_width, height, label)

    def _draw_arrows(self, canvas: _Canvas) -> None:
        levels = self.levels
        for level in levels:  # within a level: convolutions, the 1×1 head, mirror and output crop
            for bars in (level.encoder, level.decoder):
                for before, bar in zip(bars, bars[1:]):
                    if bar.arrow is not None:
                        kind, label = bar.arrow
                        canvas.arrow(before.right + 4, level.cy, self._arrow_end(bar), level.cy, kind, label)
        for index in range(1, len(levels)):  # max-pool down the encoder, up-sampling up the decoder
            above, below = levels[index - 1], levels[index]
            source, target = above.encoder[-1], below.encoder[0]
            canvas.arrow(source.centre, source.bottom + 3, target.centre, target.top - 4, "pool")
            source = below.decoder[-1] if index < len(levels) - 1 else below.encoder[-1]
            target = above.decoder[1]
            canvas.arrow(source.centre, source.top - 3, target.centre, target.bottom + 4, "up")
        gated = {int(layer.name.split(".")[1]) for layer in self._gates()}
        for index, level in enumerate(levels[:-1]):  # copy and crop across
            source, target = level.encoder[-1], level.decoder[0]
            label = self._copy_label(level)
            canvas.arrow(source.right + 4, level.cy, self._arrow_end(target), level.cy, "copy", label)
            if index in gated:  # the attention gate sits on the copy, a third of the way across
                x = source.right + 4 + (self._arrow_end(target) - source.right - 4) / 3
                canvas.shapes.append(
                    f'<circle class="gate" cx="{_num(x)}" cy="{_num(level.cy)}" r="6" fill="#ffffff" '
                    f'stroke="{_GATE}" stroke-width="2"/>'
                )
                canvas.shapes.append(_cross(x, level.cy))
            if label:  # the region the crop keeps, dashed on the encoder's map, as in the paper
                kept = source.h * _extent(target.size) / _extent(source.size)
                canvas.crops.append(
                    f'<rect class="crop" x="{_num(source.x + 2)}" y="{_num(level.cy - kept / 2)}" '
                    f'width="{_num(source.w - 4)}" height="{_num(kept)}" fill="none" stroke="{_CROP}" '
                    'stroke-width="1" stroke-dasharray="3 2"/>'
                )

    def _draw_bars(self, canvas: _Canvas) -> None:
        """Bars, the channels above them and the sizes beside them (rotated, bottom up, as in the paper)."""
        for level in self.levels:
            pair = level.decoder[:2] if level.decoder else []  # the copied map and the up-sampled one, touching
            for bar in (*level.encoder, *level.decoder):
                canvas.shapes.append(
                    f'<rect class="bar {bar.kind}" x="{_num(bar.x)}" y="{_num(bar.top)}" width="{_num(bar.w)}" '
                    f'height="{_num(bar.h)}" fill="{_FILLS[bar.kind]}" stroke="{_STROKE}" stroke-width="1"/>'
                )
                canvas.boxes.append((bar.x - _SIZE_FONT - 6, bar.top, bar.right, bar.bottom))
                if bar.label is not None:
                    centre = (pair[0].x + pair[1].right) / 2 if pair and bar is pair[0] else bar.centre
                    if bar.label_left:
                        canvas.note(centre - 3, bar.top - 6, bar.label, anchor="end", font=_CHANNEL_FONT)
                    else:
                        canvas.note(centre, bar.top - 6, bar.label, font=_CHANNEL_FONT)
                if bar.caption:
                    canvas.note(bar.centre, bar.bottom + 14, bar.caption, colour=_GREY)
                if not (pair and bar is pair[1]):  # one size for the concatenated pair
                    canvas.texts.append(
                        f'<text transform="translate({_num(bar.x - 4)},{_num(bar.bottom)}) rotate(-90)" '
                        f'font-size="{_SIZE_FONT}" fill="{_TEXT}">{_text(_fmt(bar.size))}</text>'
                    )
        canvas.shapes.extend(canvas.crops)

    def _draw_legend(self, canvas: _Canvas, right: float) -> tuple[float, float]:
        """The legend, bottom right: under the decoder where that is free (as in the paper), else below.

        Returns:
            The right and bottom edges of everything drawn.
        """
        entries = list(self._words().items())
        if any(kind == "copy" and "crop" in words for kind, words in entries):
            entries.insert([kind for kind, _ in entries].index("copy") + 1, ("kept", "region kept by the crop"))
        row, sample = 19, 34
        width = 12 + sample + 8 + max(_text_width(words, _NOTE_FONT) for _, words in entries) + 12
        height = 10 + row * len(entries)
        right = max(right, max(box[2] for box in canvas.boxes))
        bottom = max(box[3] for box in canvas.boxes)
        x0, y0 = right - width, bottom - height
        free = not any(
            x0 - 8 < b[2] and b[0] < x0 + width + 8 and y0 - 8 < b[3] and b[1] < y0 + height + 8 for b in canvas.boxes
        )
        if not free:
            y0 = bottom + 16
        legend = canvas.legend
        legend.append(
            f'<rect x="{_num(x0)}" y="{_num(y0)}" width="{_num(width)}" height="{_num(height)}" fill="#ffffff" '
            'stroke="#cccccc" stroke-width="1" rx="4"/>'
        )
        y = y0 + 5 + row / 2
        for kind, words in entries:
            if kind == "gate":
                legend.append(
                    f'<circle cx="{_num(x0 + 12 + sample / 2)}" cy="{_num(y)}" r="6" fill="#ffffff" '
                    f'stroke="{_GATE}" stroke-width="2"/>' + _cross(x0 + 12 + sample / 2, y)
                )
            elif kind == "kept":
                legend.append(
                    f'<rect x="{_num(x0 + 12 + sample / 2 - 5)}" y="{_num(y - 7)}" width="10" height="14" '
                    f'fill="none" stroke="{_CROP}" stroke-width="1" stroke-dasharray="3 2"/>'
                )
            else:
                legend.append(_line(x0 + 12, y, x0 + 12 + sample, y, kind))
            legend.append(
                f'<text x="{_num(x0 + 20 + sample)}" y="{_num(y + 4)}" font-size="{_NOTE_FONT}" fill="{_TEXT}">'
                f"{_text(words)}</text>"
            )
            y += row
        return max(right, x0 + width), max(bottom, y0 + height)


class _NestedFigure(_Figure):
    """UNet++ drawn as Zhou et al. 2018, Fig. 1a: node X(i, j) at row i and column i + 2j, the encoder going down
    to the right, each node's up-sampled input coming up from the left, dense skips along each row, and the heads
    on the top row. One box per node: its name, channels and size."""

    _DX = 62  # half the distance between two nodes of a row
    _DY = 92  # between rows
    _W, _H = 84, 50  # a node's box

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.dims = len(plan.input_size)
        self.layers = plan.layers
        self.levels = []
        depth = plan.depth
        self.nodes: dict[tuple[int, int], tuple[int, ...]] = {}
        for level in range(depth):
            self.nodes[(level, 0)] = plan.block(level_name(level, depth)).shape
        for block in plan.blocks:
            parts = block.name.split(".")
            if parts[0] == "nested" and len(parts) == 3:
                self.nodes[(int(parts[1]), int(parts[2]))] = block.shape
        self.heads = sorted(int(layer.name.split(".")[2]) for layer in self.layers
                            if layer.auxiliary and layer.kind == "conv")
        self.cropped = any(any(a or b for a, b in layer.crop) for layer in self.layers
                           if layer.kind == "crop" and ".crops." in layer.name)
        titles = len(self._titles())
        self.top = _MARGIN + 22 + 18 * (titles - 1) + 22 + 30
        self.left = _MARGIN + 2 * self._DX + self._W / 2

    def _centre(self, i: int, j: int) -> tuple[float, float]:
        return self.left + (i + 2 * j) * self._DX + self._W / 2, self.top + i * self._DY + self._H / 2

    def _node_words(self, i: int, j: int) -> tuple[str, str, str]:
        shape = self.nodes[(i, j)]
        return f"X({i}, {j})", str(shape[0]), _fmt(shape[1:])

    def _head_nodes(self) -> str:
        """``X(0, 1)`` or ``X(0, 1…3)``: the nodes with an auxiliary head."""
        return f"X(0, {self.heads[0]})" if len(self.heads) == 1 else f"X(0, {self.heads[0]}…{self.heads[-1]})"

    def _words(self) -> dict[str, str]:
        plan, dims, depth = self.plan, self.dims, self.plan.depth
        convs = self._convs(level_name(0, depth))
        conv = convs[0]
        kernel = _per_level([self._convs(level_name(level, depth))[0].kernel for level in range(depth)])
        pad = f"same ({conv.mode})" if conv.pads_anything else "valid"
        norm_layer, act_layer = self._first("norm"), self._first("act")
        norm = f", {norm_layer.mode} norm" if norm_layer else ""
        activation = _ACTIVATIONS.get(act_layer.mode, act_layer.mode) if act_layer else ""
        if act_layer and act_layer.mode == "leaky_relu":
            activation += f" {act_layer.value:g}"
        pool = _per_level([(self._pool(level) or self._convs(level_name(level, depth))[0]).stride
                           for level in range(1, depth)])
        kind = self._up_kind()
        upsample = self._first("upsample")
        up = {"transpose": f"up-conv {pool}, transposed",
              "interpolate": f"up-sample ({upsample.mode if upsample else ''}) {pool}",
              "upsample_conv": f"up-sample ({upsample.mode if upsample else ''}), conv {pool}"}[kind]
        words = {
            "conv": f"node: {len(convs)}× conv {kernel} {pad}{norm}, {activation}",
            "copy": "dense skips: every earlier node of the row" + (", cut centrally" if self.cropped else ""),
            "pool": self._down_words(),
            "up": up,
            "head": f"conv {_fmt((1,) * dims)}" + (f"; deep supervision on {self._head_nodes()}" if self.heads else ""),
        }
        if depth == 1:
            for unused in ("copy", "pool", "up"):
                del words[unused]
        if any(a or b for a, b in plan.mirror):
            words["mirror"] = "mirror padding (reflect)"
        if any(a or b for a, b in plan.output_crop):
            words["crop"] = "crop to the input's size"
        return words

    def svg(self) -> str:
        """The figure as an SVG document."""
        canvas = _Canvas()
        plan, depth = self.plan, self.plan.depth
        w, h = self._W, self._H
        for (i, j) in self.nodes:  # arrows first, under the boxes
            x, y = self._centre(i, j)
            if j == 0 and i + 1 < depth:
                bx, by = self._centre(i + 1, 0)
                canvas.arrow(x + w / 4, y + h / 2 + 2, bx - w / 4, by - h / 2 - 4, "pool")
            if j > 0:
                ux, uy = self._centre(i + 1, j - 1)
                canvas.arrow(ux + w / 4, uy - h / 2 - 2, x - w / 4, y + h / 2 + 4, "up")
                px, _ = self._centre(i, j - 1)
                canvas.arrow(px + w / 2 + 3, y, x - w / 2 - 4, y, "copy")
        x0, y0 = self._centre(0, 0)
        input_x = x0 - w / 2 - 2 * self._DX + w / 4
        canvas.arrow(input_x + _BAR + 4, y0, x0 - w / 2 - 4, y0, "conv")
        self._bar(canvas, input_x, y0, "input", plan.input_shape[0], plan.core_input_size, "input")
        for (i, j) in sorted(self.nodes):
            x, y = self._centre(i, j)
            self._box(canvas, x - w / 2, y - h / 2, w, h, "map" if j else "copy", self._node_words(i, j))
        for j in self.heads:  # auxiliary heads: an arrow up from the node
            x, y = self._centre(0, j)
            canvas.arrow(x, y - h / 2 - 2, x, y - h / 2 - 22, "head")
            canvas.note(x, y - h / 2 - 32, "head", colour=_COLOURS["head"])
        x, y = self._centre(0, depth - 1)
        out_x = x + w / 2 + 2 * self._DX - w / 4
        canvas.arrow(x + w / 2 + 3, y, out_x - 4, y, "head")
        caption = "output" if plan.final_activation == "none" else f"output ({plan.final_activation})"
        self._bar(canvas, out_x, y, "output", plan.output_shape[0], plan.output_size, caption)
        return self._finish(canvas, max(box[2] for box in canvas.boxes) + _MARGIN, "UNet++")

    def _bar(self, canvas: _Canvas, x: float, cy: float, kind: str, channels: int, size: tuple[int, ...],
             caption: str) -> None:
        """The input or output: a slim bar, its channels above, its size and caption below."""
        h = self._H
        canvas.shapes.append(
            f'<rect class="bar {kind}" x="{_num(x)}" y="{_num(cy - h / 2)}" width="{_BAR}" height="{_num(h)}" '
            f'fill="{_FILLS[kind]}" stroke="{_STROKE}" stroke-width="1"/>'
        )
        canvas.boxes.append((x, cy - h / 2, x + _BAR, cy + h / 2))
        centre = x + _BAR / 2
        canvas.note(centre, cy - h / 2 - 6, str(channels), font=_CHANNEL_FONT)
        canvas.note(centre, cy + h / 2 + 14, _fmt(size), font=_SIZE_FONT)
        canvas.note(centre, cy + h / 2 + 28, caption, colour=_GREY)

    def _box(self, canvas: _Canvas, x: float, y: float, w: float, h: float, kind: str, lines: tuple[str, ...]) -> None:
        """A node's box with its lines of text inside, centred."""
        canvas.shapes.append(
            f'<rect class="node {kind}" x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" rx="6" '
            f'fill="{_FILLS[kind]}" stroke="{_STROKE}" stroke-width="1"/>'
        )
        canvas.boxes.append((x, y, x + w, y + h))
        step = 14
        first = y + h / 2 - step * (len(lines) - 1) / 2 + 4
        for index, words in enumerate(lines):
            font = _CHANNEL_FONT if index == 0 and len(lines) == 3 else _SIZE_FONT
            weight = "bold" if index == 0 and len(lines) == 3 else "normal"
            bold = ' font-weight="bold"' if weight == "bold" else ""
            canvas.texts.append(
                f'<text x="{_num(x + w / 2)}" y="{_num(first + index * step)}" font-size="{font}"{bold} '
                f'text-anchor="middle" fill="{_TEXT}">{_text(words)}</text>'
            )


def _cross(x: float, y: float) -> str:
    """The × inside an attention gate's circle (lines, not text: it sits on an arrow)."""
    return (f'<path d="M{_num(x - 3)},{_num(y - 3)} L{_num(x + 3)},{_num(y + 3)} M{_num(x - 3)},{_num(y + 3)} '
            f'L{_num(x + 3)},{_num(y - 3)}" stroke="{_GATE}" stroke-width="1.5"/>')


def _line(x1: float, y1: float, x2: float, y2: float, kind: str, css: str = "") -> str:
    """An arrow of one operation's colour (dashed for the mirror padding and the output crop)."""
    dash = ' stroke-dasharray="5 3"' if kind in ("mirror", "crop") else ""
    return (
        f'<line{css} x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" stroke="{_COLOURS[kind]}" '
        f'stroke-width="2"{dash} marker-end="url(#arrow-{kind})"/>'
    )


@dataclass
class _Canvas:
    """SVG elements by layer (arrows under bars, text on top), and the boxes the legend must not cover."""

    arrows: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    crops: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    legend: list[str] = field(default_factory=list)
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # x0, y0, x1, y1

    def arrow(self, x1: float, y1: float, x2: float, y2: float, kind: str, label: str | None = None) -> None:
        self.arrows.append(_line(x1, y1, x2, y2, kind, css=f' class="arrow {kind}"'))
        self.boxes.append((min(x1, x2), min(y1, y2) - 4, max(x1, x2), max(y1, y2) + 4))
        if label:
            self.note((x1 + x2) / 2, y1 - 6, label, colour=_GREY if kind == "copy" else _COLOURS[kind])

    def note(
        self,
        x: float,
        y: float,
        words: str,
        anchor: str = "middle",
        font: int = _NOTE_FONT,
        colour: str = _TEXT,
        weight: str = "normal",
    ) -> None:
        bold = ' font-weight="bold"' if weight == "bold" else ""
        self.texts.append(
            f'<text x="{_num(x)}" y="{_num(y)}" font-size="{font}"{bold} text-anchor="{anchor}" fill="{colour}">'
            f"{_text(words)}</text>"
        )
        width = _text_width(words, font)
        left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
        self.boxes.append((left, y - font, left + width, y + 3))
