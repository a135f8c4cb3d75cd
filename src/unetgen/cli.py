"""The ``unetgen`` command. The library never imports this module; it only prints and sets exit codes.

Exit status: 0 on success, 2 on a user error (one line per problem, no traceback), 1 on a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .errors import SizeError, UNetGenError
from .files import check_target
from .plan import make_plan
from .spec import load_spec, preset_names
from .summary import render

log = logging.getLogger("unetgen")


#: The largest size ``--input-size`` takes, as for the spec's ``input_size``.
MAX_INPUT_SIZE = 1_000_000


def _input_size(text: str) -> int:
    """argparse type of one ``--input-size`` value: an integer from 1 to ``MAX_INPUT_SIZE``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if not 1 <= value <= MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"{text[:40]} is out of range; each size must be from 1 to {MAX_INPUT_SIZE}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other user error (``--help`` shows the usage)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"unetgen: error: {' '.join(message.split())}; see '{self.prog} --help'\n")


def _plan(spec: UNetSpec, source: str, input_size: Sequence[int] | None) -> Plan:
    """make_plan, naming the spec's file when the size that fails is the spec's own (no ``--input-size``)."""
    try:
        return make_plan(spec, input_size)
    except SizeError as exc:
        if input_size is not None or str(exc).startswith(f"{source}: "):
            raise
        raise type(exc)("\n".join(f"{source}: {line}" for line in str(exc).splitlines())) from None


def _cmd_build(args: argparse.Namespace) -> int:
    source = args.spec or "paper"
    spec = load_spec(source)
    plan = _plan(spec, source, args.input_size)
    if args.save:
        check_target(args.save)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(render(plan, source), end="")
    if args.save:
        from .checkpoint import save
        from .network import build

        path = save(build(spec, args.input_size), args.save)
        print(f"saved {path} (spec + weights; load with unetgen.load)", file=sys.stderr if args.json else sys.stdout)
    return 0


def _cmd_draw(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .draw import draw, svg_size
    from .files import atomic_write

    plan = _plan(load_spec(args.spec or "paper"), args.spec or "paper", args.input_size)
    svg = draw(plan)
    if args.output == "-":
        if args.png:
            raise UNetGenError("--png: cannot write a PNG to standard output; give a file with -o (e.g. -o unet.png)")
        sys.stdout.write(svg)
        return 0
    path = Path(args.output)
    kind = path.suffix.lower()
    if kind not in (".svg", ".png"):
        raise UNetGenError(f"{path}: unknown image type '{path.suffix}'; give a file ending in .svg or .png")
    targets = {path.with_suffix(".png")} if args.png or kind == ".png" else set()
    for target in ({path} | targets) if kind == ".svg" else targets:
        check_target(target)
    images: dict[Path, bytes] = {}
    if kind == ".svg":
        images[path] = svg.encode("utf-8")
    for target in targets:  # rendered before anything is written: no renderer, no files
        from .png import svg_to_png

        images[target] = svg_to_png(svg, where=str(target))
    for target, data in images.items():
        atomic_write(target, lambda handle, data=data: handle.write(data))
        if target.suffix.lower() == ".png":  # the PNG header holds its size
            width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        else:
            width, height = svg_size(svg)
        print(f"wrote {target} ({width}×{height} pixels)")
    return 0


def _cmd_sizes(args: argparse.Namespace) -> int:
    from .cost import receptive_field
    from .plan import default_input_size, lattices
    from .sizes import Lattice

    spec = load_spec(args.spec or "paper")
    plan = make_plan(spec, args.input_size)
    grids = lattices(spec)
    names = plan.axis_names
    fields = receptive_field(plan)
    same = spec.output == "same"
    lines = [f"{spec.name}: valid input sizes per axis ({'output = input' if same else 'output = input - 2 * border'})"]
    groups: dict[tuple[Lattice, int], list[str]] = {}
    for name, grid, field in zip(names, grids, fields):
        groups.setdefault((grid, field), []).append(name)
    for (grid, field), axes in groups.items():
        name = axes[0]
        label = "every axis" if len(groups) == 1 else ", ".join(axes)
        lines.append("")
        if same:
            lines.append(f"{label}: any size from 2; the input is mirrored onto the core lattice {grid.describe()}")
        else:
            lines.append(f"{label}: {grid.describe()} → output {grid.first - 2 * grid.border}+{grid.step}k")
        lines.append(f"  minimum input {2 if same else grid.first}, border {grid.border} per side, "
                     f"receptive field {field}")
        if args.output_size is not None:
            if same:
                lines.append(f"  output {args.output_size} ← input {args.output_size}")
            else:
                options = grid.input_for_output(args.output_size)
                exact = [n for n in options if grid.output(n) == args.output_size]
                if exact:
                    lines.append(f"  output {args.output_size} ← input {exact[0]}")
                else:
                    near = ", ".join(f"{n} → {grid.output(n)}" for n in options)
                    lines.append(f"  output {args.output_size} is not reachable; nearest: {near}")
            continue
        if args.range is not None:
            low, high = args.range
            if low > high or low < 1:
                raise UNetGenError(f"--range {low} {high}: give two sizes, smallest first, from 1 up")
            start = grid.at_least(low)
            sizes_ = list(range(start, high + 1, grid.step))[:200]
        else:
            centre = args.near if args.near is not None else default_input_size(spec)[names.index(name)]
            if centre < 1:
                raise UNetGenError(f"--near {centre}: give a size from 1 up")
            above = grid.at_least(centre)
            sizes_ = [n for n in range(above - 3 * grid.step, above + 3 * grid.step + 1, grid.step) if n >= grid.first]
        if not same:
            lines.append("  " + ", ".join(f"{n} → {grid.output(n)}" for n in sizes_) if sizes_ else "  none in range")
    print("\n".join(lines))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="unetgen",
        description="Generate U-Net variants from a declarative spec, every shape worked out before building.",
    )
    parser.add_argument("--version", action="version", version=f"unetgen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    presets = ", ".join(preset_names())
    build = commands.add_parser(
        "build",
        help="validate a spec, plan it and describe the network block by block",
        description="Validate a spec, plan it and print the network block by block with every shape.",
    )
    build.add_argument(
        "spec", nargs="?", metavar="SPEC", help=f"a YAML spec file or a preset name ({presets}); default: paper"
    )
    build.add_argument(
        "--input-size", nargs="+", type=_input_size, metavar="N",
        help="spatial input size, one value per axis (e.g. 572 572)",
    )
    build.add_argument("--json", action="store_true", help="print the plan as JSON")
    build.add_argument("--save", metavar="FILE", help="also build the network and save spec + weights to FILE")
    build.set_defaults(func=_cmd_build)
    sizes_cmd = commands.add_parser(
        "sizes",
        help="list the input sizes the network takes, with their output sizes, border and receptive field",
        description="The sizes calculator: valid input sizes per axis and their outputs, the minimum, the border "
        "the network consumes on each side and its receptive field, all from the plan.",
    )
    sizes_cmd.add_argument("spec", nargs="?", metavar="SPEC", help=f"a YAML spec file or a preset name ({presets})")
    which = sizes_cmd.add_mutually_exclusive_group()
    which.add_argument("--near", type=int, metavar="N", help="list the valid sizes around N (default: the spec's size)")
    which.add_argument("--range", type=int, nargs=2, metavar=("A", "B"), help="list the valid sizes from A to B")
    which.add_argument("--output-size", type=int, metavar="N", help="which input size gives output size N?")
    sizes_cmd.add_argument("--input-size", nargs="+", type=int, metavar="N", help=argparse.SUPPRESS)
    sizes_cmd.set_defaults(func=_cmd_sizes)
    draw = commands.add_parser(
        "draw",
        help="draw the network as the U-Net paper's Figure 1 (SVG, or PNG)",
        description="Draw the network as Figure 1 of the U-Net paper: one bar per feature map, channels above, "
        "sizes beside, arrows by operation. Writes SVG (text, no dependency); PNG needs Chromium or cairosvg.",
    )
    draw.add_argument(
        "spec", nargs="?", metavar="SPEC", help=f"a YAML spec file or a preset name ({presets}); default: paper"
    )
    draw.add_argument(
        "-o", "--output", metavar="FILE", default="unet.svg",
        help="the image to write, .svg or .png (default: unet.svg; - prints the SVG)",
    )
    draw.add_argument(
        "--input-size", nargs="+", type=_input_size, metavar="N",
        help="spatial input size, one value per axis (e.g. 572 572)",
    )
    draw.add_argument("--png", action="store_true", help="also write a PNG beside the SVG (needs Chromium or cairosvg)")
    draw.set_defaults(func=_cmd_draw)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``unetgen`` command.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 2 user error, 1 internal error.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="unetgen: %(message)s")
    try:
        return int(args.func(args))
    except UNetGenError as exc:
        for line in str(exc).splitlines():
            print(f"unetgen: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unetgen: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"unetgen: internal error ({type(exc).__name__}: {exc}); this is a bug: run again with --debug "
            "and report the traceback",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
