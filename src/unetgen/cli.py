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
from .errors import UNetGenError
from .files import check_target
from .plan import make_plan
from .spec import load_spec, preset_names
from .summary import render

log = logging.getLogger("unetgen")


def _cmd_build(args: argparse.Namespace) -> int:
    source = args.spec or "paper"
    spec = load_spec(source)
    plan = make_plan(spec, args.input_size)
    if args.save:
        check_target(args.save)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(render(plan, source), end="")
    if args.save:
        from .checkpoint import save
        from .network import UNet

        path = save(UNet(plan), args.save)
        print(f"saved {path} (spec + weights; load with unetgen.load)", file=sys.stderr if args.json else sys.stdout)
    return 0


def _cmd_draw(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .draw import draw, svg_size
    from .files import atomic_write

    plan = make_plan(load_spec(args.spec or "paper"), args.input_size)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        "--input-size", nargs="+", type=int, metavar="N", help="spatial input size, one value per axis (e.g. 572 572)"
    )
    build.add_argument("--json", action="store_true", help="print the plan as JSON")
    build.add_argument("--save", metavar="FILE", help="also build the network and save spec + weights to FILE")
    build.set_defaults(func=_cmd_build)
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
        "--input-size", nargs="+", type=int, metavar="N", help="spatial input size, one value per axis (e.g. 572 572)"
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
