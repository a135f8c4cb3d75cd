"""The ``unetgen`` command. The library never imports this module; it only prints and sets exit codes.

Exit status: 0 on success, 2 on a user error (one line per problem, no traceback), 1 on a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path

from .version import __version__
from .drawing.draw import draw, svg_size
from .drawing.png import png_size, svg_to_png
from .errors import SizeError, UNetGenError
from .export.contract import DEFAULT_OPSET
from .files import atomic_write, check_target
from .planning.cost import estimate
from .planning.plan import Plan, make_plan
from .planning.training import checkpoint_levels
from .spec.fields import UNetSpec, load_spec, preset_names
from .spec.schema import schema_text
from .summary import plan_json, render, size_report, training_json, training_text
from .text import size_text

log = logging.getLogger("unetgen")


#: The largest size typed on the command line, as for the spec's ``input_size``.
MAX_INPUT_SIZE = 1_000_000


def _input_size(text: str) -> int:
    """argparse type of a size (``--input-size``, ``sizes --near/--range/--output-size``): 1 to ``MAX_INPUT_SIZE``."""
    shown = text if len(text) <= 20 else f"{text[:12]}... ({len(text)} digits)"
    try:
        value = int(text)
    except ValueError:  # not a number, or one too long for Python to convert (4300 digits)
        if not text.strip().lstrip("+-").isdecimal():
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        value = MAX_INPUT_SIZE + 1
    if not 1 <= value <= MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"{shown} is out of range; each size must be from 1 to {MAX_INPUT_SIZE}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other user error (``--help`` shows the usage)."""

    def error(self, message: str) -> typing.NoReturn:
        message = " ".join(message.split())
        message = message if len(message) <= 300 else message[:297] + "..."  # argparse quotes the whole value
        self.exit(2, f"unetgen: error: {message}; see '{self.prog} --help'\n")


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
    training = None
    if args.train:
        optimizer = None if args.optimizer == "none" else args.optimizer
        levels = checkpoint_levels(plan, _levels(args.checkpoint))
        training = estimate(plan, args.batch or 1, training=True, optimizer=optimizer, precision=args.precision,
                            device=args.device, checkpoint=levels)
    elif args.batch is not None or args.checkpoint is not None:
        raise UNetGenError("--batch, --checkpoint: give --train (they size a training step)")
    if args.json:
        data = plan_json(plan)
        if training is not None:
            data["training"] = training_json(plan, training, levels)
        print(json.dumps(data, indent=2))
    else:
        print(render(plan, source), end="")
        if training is not None:
            print(training_text(plan, training, optimizer, args.precision, args.device, levels), end="")
    if args.save:
        from .network.checkpoint import save
        from .network.unet import build

        path = save(build(spec, args.input_size, seed=args.seed), args.save)
        print(f"saved {path} (spec + weights; load with unetgen.load)", file=sys.stderr if args.json else sys.stdout)
    return 0


def _levels(text: str | None) -> str | list[int] | None:
    """``--checkpoint``: ``levels``, ``none`` or level numbers separated by commas."""
    if text is None or text in ("levels", "all", "none"):
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UNetGenError(f"--checkpoint {text}: give 'levels' (every level) or level numbers like 0,1") from None


def _cmd_plan_for(args: argparse.Namespace) -> int:
    from .planning.limits import parse_bytes
    from .planning.planner import fingerprint_inputs, plan_for

    if args.fingerprint:
        path = Path(args.fingerprint)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UNetGenError(f"{path}: cannot read it as JSON ({exc.__class__.__name__}); give nnU-Net's "
                               "dataset_fingerprint.json") from None
        spacing, shape, channels, cases = fingerprint_inputs(data)
        channels = args.channels or channels
        cases = args.cases or cases
    else:
        missing = [flag for flag, value in (("--spacing", args.spacing), ("--median-shape", args.median_shape),
                                            ("--channels", args.channels)) if value is None]
        if missing:
            raise UNetGenError(f"{', '.join(missing)}: give them, or --fingerprint dataset_fingerprint.json")
        spacing, shape, channels, cases = args.spacing, args.median_shape, args.channels, args.cases
    overrides = {"padding": args.padding} if args.padding else {}
    if args.padding == "valid":
        overrides["downsampling"] = "maxpool"  # a strided 3x3 convolution cannot keep valid maps centred
    planned = plan_for(
        spacing, shape, channels, args.classes, parse_bytes(args.memory), dims=args.dims,
        optimizer=None if args.optimizer == "none" else args.optimizer, precision=args.precision,
        device=args.device, cases=cases, overrides=overrides,
    )
    if args.explain:
        print(planned.explain())
    output = Path(args.output)
    check_target(output)
    text = planned.yaml()
    atomic_write(output, lambda handle: handle.write(text.encode("utf-8")))
    print(planned.describe(), end="")
    print(f"wrote {output} (unetgen build {output} --train --batch {planned.batch} shows the step)")
    return 0


def _cmd_draw(args: argparse.Namespace) -> int:
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
    images: dict[Path, tuple[bytes, tuple[int, int]]] = {}
    if kind == ".svg":
        images[path] = (svg.encode("utf-8"), svg_size(svg))
    for target in targets:  # rendered before anything is written: no renderer, no files
        data = svg_to_png(svg, where=str(target))
        images[target] = (data, png_size(data))
    for target, (data, size) in images.items():
        atomic_write(target, lambda handle, data=data: handle.write(data))
        print(f"wrote {target} ({size_text(size)} pixels)")
    return 0


def _cmd_sizes(args: argparse.Namespace) -> int:
    plan = make_plan(load_spec(args.spec or "paper"), args.input_size)
    if args.range is not None and not 1 <= args.range[0] <= args.range[1]:
        raise UNetGenError(f"--range {args.range[0]} {args.range[1]}: give two sizes, smallest first, from 1 up")
    print(size_report(plan, near=args.near, span=args.range, output_size=args.output_size), end="")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path = atomic_write(args.output, lambda handle: handle.write(text.encode("utf-8")))
    print(f"wrote {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export.writer import export_onnx

    if args.weights:
        from .network.checkpoint import load

        source: typing.Any = load(args.weights)
        spec, label = source.spec, args.weights
        if args.spec is not None and load_spec(args.spec) != spec:
            raise UNetGenError(
                f"{args.weights}: the checkpoint's spec ('{spec.name}') differs from {args.spec}; drop SPEC to "
                "export the checkpoint with the spec saved in it"
            )
    else:
        label = args.spec or "paper"
        spec = source = load_spec(label)
    _plan(spec, label, args.input_size)
    path = Path(args.onnx or f"{spec.name}.onnx")
    check_target(path)
    if args.batch is not None and not args.static:
        raise UNetGenError(
            "--batch: fixes the batch size of a static file; add --static (a dynamic file takes any batch)"
        )
    print(f"exporting {label} to {path} ...", flush=True)
    report = export_onnx(
        source, path, input_size=args.input_size, opset=args.opset, static=args.static,
        batch=args.batch if args.batch is not None else 1, verify=not args.no_verify, heads=args.heads,
        quantize=args.quantize, precision=args.precision, calibration=args.calibration,
        check_images=args.check_images, thresholds={"min_agreement": args.min_agreement,
                                                    "min_dice": args.min_dice, "max_error": args.max_error},
    )
    print(report.describe(), end="")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .export.reader import read_onnx_info

    info = read_onnx_info(args.file)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
    else:
        print(info.describe(), end="")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .inference.images import output_kind, read_image, write_result
    from .inference.image_checks import check_image
    from .inference.predict import predict
    from .inference.runners import load_model
    from .inference.tiling import plan_tiles

    runner = load_model(args.weights, args.spec, precision=args.precision)
    spec = runner.spec
    output_kind(args.output, args.logits, spec.spatial_dims)
    check_target(args.output)
    if args.attention is not None:
        if not args.attention.endswith(".npz"):
            raise UNetGenError(f"--attention {args.attention}: give a .npz file (one array per gate)")
        check_target(args.attention)
    image = read_image(args.input)
    if args.channels is not None:
        channels = args.channels
    else:
        channels = "last" if image.channels_last else "first"
    pixels = check_image(image.pixels, spec, channels, where=args.input)
    size = pixels.shape[1:]
    tile = args.tile_size[0] if args.tile_size and len(args.tile_size) == 1 else args.tile_size
    options = dict(tile_size=tile, memory=args.memory, batch_size=args.batch, overlap=args.overlap)
    layout = plan_tiles(spec, size, **options)
    layout_words = "" if image.channels_last and args.channels is None else f", channels {channels}"
    print(f"read {args.input}: {image.words}{layout_words} → input {size_text(pixels.shape)}")
    channels_in, channels_out = layout.plan.input_shape[0], layout.plan.output_shape[0]
    precision = "" if runner.precision == "fp32" else f" ({runner.precision})"
    print(f"network {spec.name} from {runner.source}{precision}: {channels_in} → {channels_out} channels")
    print(f"tiles: {layout.describe()}")
    started = time.perf_counter()
    result = predict(runner, image.pixels, channels=channels, output="logits" if args.logits else "labels",
                     progress=True, attention=args.attention is not None, **options)
    seconds = time.perf_counter() - started
    maps = None
    if args.attention is not None:
        result, maps = result
    write_result(args.output, result)
    what = "logits" if args.logits else "labels"
    shown = size_text(result.shape)
    classes = "" if args.logits else f", classes {int(result.min())}–{int(result.max())} present"
    rate = math.prod(size) / max(seconds, 1e-9) / 1e6
    print(f"wrote {args.output}: {what} {shown} {result.dtype}{classes} ({seconds:.1f} s, {rate:.2f} Mpx/s)")
    if maps is not None:
        atomic_write(args.attention, lambda handle: np.savez(handle, **maps))
        print(f"wrote {args.attention}: attention maps of {', '.join(maps)} ({size_text(next(iter(maps.values())).shape)} each)")
    return 0


def _cmd_import_nnunet(args: argparse.Namespace) -> int:
    from .interop.nnunet import import_nnunet, write_import

    imported = import_nnunet(args.plans, args.configuration, dataset_json=args.dataset_json,
                             checkpoint=args.checkpoint)
    plan = make_plan(imported.spec)
    channels = f"{plan.input_shape[0]} → {plan.output_shape[0]} channels"
    print(f"nnU-Net {imported.network_class} '{imported.configuration}': {channels}, {plan.depth} levels, "
          f"{plan.parameters:,} parameters, patch {size_text(plan.input_size)}")
    paths = write_import(imported, args.out, source=Path(args.plans).name)
    print(f"wrote {paths[0]}")
    if imported.model is not None:
        info = imported.checkpoint
        print(f"wrote {paths[1]} ({info['tensors']} weights of {info['trainer']}, fold {info['fold']}, "
              f"epoch {info['epoch']})")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training.config import TrainConfig
    from .training.loop import train
    from .training.records import epoch_line

    options = {name: getattr(args, name) for name in _TRAIN_OPTIONS if getattr(args, name) is not None}
    if args.patch_size is not None:
        options["patch_size"] = tuple(args.patch_size)
    config = TrainConfig(spec=args.spec, images=args.images, masks=args.masks, out=args.out, resume=args.resume,
                         **options)

    epochs = [config.epochs]  # the run's own when it is resumed: set once everything is checked

    def announce(setup: typing.Any) -> None:
        epochs[0] = setup.config.epochs
        for line in setup.describe():
            print(line, flush=True)

    def report(row: dict[str, typing.Any]) -> None:
        print(epoch_line(row, epochs[0]), flush=True)

    result = train(config, progress=True, report=report, announce=announce)
    if not result.main:
        return 130 if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted at epoch {result.epochs + 1}, step {result.step}: saved {result.last}; continue with "
              "the same command and --resume", file=sys.stderr)
        return 130
    files = [result.last] + ([result.best] if result.best is not None else [])
    best = ""
    if result.best_epoch is not None:
        what = "validation Dice" if "dice_mean" in result.rows[-1] else "training loss"
        score = result.best_score if what == "validation Dice" else -(result.best_score or 0.0)
        best = f" (best: epoch {result.best_epoch}, {what} {score:.4f})"
    folder = result.out
    print(f"wrote {', '.join(str(f) for f in files)}{best}; log {folder / 'log.csv'}, {folder / 'log.json'}; "
          f"curves {folder / 'curves.svg'}")
    return 0


#: ``unetgen train``'s options that map one to one onto :class:`~unetgen.training.config.TrainConfig` fields.
_TRAIN_OPTIONS = ("instances", "val_images", "val_masks", "val_fraction", "epochs", "batch_size", "memory", "lr",
                  "seed", "device", "precision", "recipe", "optimizer", "loss", "augment", "normalization", "w0", "sigma",
                  "patches_per_image")


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
    build.add_argument("--seed", type=int, metavar="N", help="with --save: make the initial weights deterministic")
    train = build.add_argument_group(
        "training memory", "the peak memory of one training step (weights, gradients, optimizer state, what autograd "
        "saves, the backward pass), replayed from the plan; see docs/planning.md",
    )
    train.add_argument("--train", action="store_true", help="estimate one training step at the input size")
    train.add_argument("--batch", type=_input_size, metavar="N", help="samples per step (default 1)")
    train.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "none"), default="sgd",
                       help="sgd (momentum: 1 buffer per weight), adam or adamw (2), none (default sgd)")
    train.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                       help="fp32, or autocast to bf16 or fp16 (default fp32)")
    train.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                       help="where the step runs: dropout's mask, autocast's ops, the optimizer differ (default cuda)")
    train.add_argument("--checkpoint", metavar="LEVELS",
                       help="activation checkpointing: 'levels' (every level) or level numbers like 0,1")
    build.set_defaults(func=_cmd_build)
    planner = commands.add_parser(
        "plan-for",
        help="plan a network for your data and memory: nnU-Net's topology, patch and batch by the exact estimate",
        description="Plan a network for data of a voxel spacing and median image size and a memory budget: "
        "nnU-Net's topology rules (pooling, kernels, features), the patch and batch sized by unetgen's exact "
        "training estimate with the measured overhead to fill at least 85% of the budget, never more. Writes the "
        "spec (YAML, with a comment saying how it was chosen). See docs/planning.md.",
    )
    data = planner.add_argument_group("the data (or --fingerprint)")
    data.add_argument("--spacing", type=float, nargs="+", metavar="MM", help="voxel spacing per axis (2 or 3 values)")
    data.add_argument("--median-shape", type=float, nargs="+", metavar="N",
                      help="the median image size in voxels at that spacing, per axis")
    data.add_argument("--channels", type=int, metavar="C", help="input channels (modalities)")
    data.add_argument("--fingerprint", metavar="JSON",
                      help="nnU-Net's dataset_fingerprint.json instead (spacing, shapes, channels, cases)")
    data.add_argument("--cases", type=int, metavar="N",
                      help="training cases: the batch sees at most 5%% of the dataset, as in nnU-Net")
    planner.add_argument("--classes", type=int, required=True, metavar="K",
                         help="output channels: the labels, background included")
    planner.add_argument("--memory", required=True, metavar="SIZE",
                         help="memory budget of one training step, e.g. 8GiB (leave room for the CUDA context)")
    planner.add_argument("--dims", type=int, choices=(2, 3), help="2: a 2D network on the in-plane axes")
    planner.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "none"), default="sgd",
                         help="sgd (nnU-Net's; default), adam, adamw or none")
    planner.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp16",
                         help="autocast to fp16 (nnU-Net's mixed precision; default) or bf16, or fp32")
    planner.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where it trains (default cuda)")
    planner.add_argument("--padding", choices=("same", "valid"),
                         help="valid: unpadded convolutions (with max-pooling) instead of nnU-Net's same")
    planner.add_argument("-o", "--output", default="planned.yaml", metavar="FILE",
                         help="the spec to write (default planned.yaml)")
    planner.add_argument("--explain", action="store_true",
                         help="show the candidates considered: patch, batch, memory, FLOPs per step")
    planner.set_defaults(func=_cmd_plan_for)
    sizes_cmd = commands.add_parser(
        "sizes",
        help="list the input sizes the network takes, with their output sizes, border and receptive field",
        description="The sizes calculator: valid input sizes per axis and their outputs, the minimum, the border "
        "the network consumes on each side and its receptive field, all from the plan.",
    )
    sizes_cmd.add_argument("spec", nargs="?", metavar="SPEC", help=f"a YAML spec file or a preset name ({presets})")
    which = sizes_cmd.add_mutually_exclusive_group()
    which.add_argument(
        "--near", type=_input_size, metavar="N", help="list the valid sizes around N (default: the spec's size)"
    )
    which.add_argument(
        "--range", type=_input_size, nargs=2, metavar=("A", "B"), help="list the valid sizes from A to B"
    )
    which.add_argument("--output-size", type=_input_size, metavar="N", help="which input size gives output size N?")
    sizes_cmd.add_argument("--input-size", nargs="+", type=_input_size, metavar="N", help=argparse.SUPPRESS)
    sizes_cmd.set_defaults(func=_cmd_sizes)
    predict = commands.add_parser(
        "predict",
        help="segment an image or volume of any size by overlap-tiles",
        description="Segment an image or volume of any size by overlap-tiles (Ronneberger et al. 2015, Fig. 2): "
        "tiles on the network's lattice, the image mirrored at its border, tile size from a memory budget. "
        "Valid networks give exactly one pass over the whole mirrored image; others are blended without seams.",
    )
    predict.add_argument(
        "spec", nargs="?", metavar="SPEC",
        help="the network (a YAML spec or a preset): needed for a file of weights alone; checked against a "
        "checkpoint or ONNX file, which hold their spec",
    )
    predict.add_argument(
        "--weights", required=True, metavar="FILE",
        help="a unetgen checkpoint (.pt), a state dict (torch.save(model.state_dict())), or an exported .onnx file",
    )
    predict.add_argument(
        "--input", required=True, metavar="IMAGE",
        help="a .npy array, or a PNG, TIFF (multi-page: a volume), JPEG or BMP file",
    )
    predict.add_argument(
        "--output", required=True, metavar="MASK",
        help="labels to .png, .tif or .npy (pixel value = class), or logits to .npy with --logits",
    )
    predict.add_argument("--logits", action="store_true", help="write float32 logits (C, *spatial) to .npy")
    predict.add_argument(
        "--attention", metavar="MAPS.npz",
        help="also write the attention gates' maps (skip_gate; torch networks), one float32 array of the image's "
             "size per gate, named as the gate (decoder.2.gate, ...)",
    )
    layout = predict.add_mutually_exclusive_group()
    layout.add_argument(
        "--channels-first", dest="channels", action="store_const", const="first",
        help="the input's first axis holds the channels (the default for .npy: (C, H, W), or (H, W) for one)",
    )
    layout.add_argument(
        "--channels-last", dest="channels", action="store_const", const="last",
        help="the input's last axis holds the channels (the default for image files: (H, W, C))",
    )
    predict.add_argument(
        "--tile-size", nargs="+", type=_input_size, metavar="N",
        help="the tile's input size, at most (one value, or one per axis); default: the largest within --memory",
    )
    predict.add_argument(
        "--memory", metavar="SIZE", help="memory budget of one pass, e.g. 2GiB (default 1GiB, at most the limit)"
    )
    predict.add_argument("--batch", type=int, metavar="N", help="tiles per pass (default: as many as fit --memory)")
    predict.add_argument(
        "--overlap", type=float, default=0.25, metavar="F",
        help="blended networks: least overlap of neighbouring tiles, a fraction of the tile (default 0.25)",
    )
    predict.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"),
        help="run a checkpoint in bfloat16 or float16 where the hardware makes it faster (else fp32, and a line "
        "says why); default: the network's own",
    )
    predict.set_defaults(func=_cmd_predict)
    draw = commands.add_parser(
        "draw",
        help="draw the network as the U-Net paper's Figure 1 (SVG, or PNG)",
        description="Draw the network as Figure 1 of the U-Net paper: one bar per feature map, channels above, "
        "sizes beside, arrows by operation. Writes SVG (text, no dependency); PNG needs the png extra "
        "(pip install 'unetgen[png]').",
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
    draw.add_argument("--png", action="store_true", help="also write a PNG beside the SVG (needs the png extra)")
    draw.set_defaults(func=_cmd_draw)
    export = commands.add_parser(
        "export",
        help="export the network to ONNX, checked with onnxruntime against torch",
        description="Export a network to one ONNX file with dynamic batch and spatial sizes (the size rules, the "
        "spec and the version in its metadata), check it with onnx.checker and with onnxruntime against torch at "
        "several sizes, and write it atomically. A failed check writes nothing.",
    )
    export.add_argument(
        "spec", nargs="?", metavar="SPEC", help=f"a YAML spec file or a preset name ({presets}); default: paper"
    )
    export.add_argument(
        "--onnx", nargs="?", const="", metavar="FILE",
        help="the .onnx file to write (default: the spec's name, e.g. paper.onnx)",
    )
    export.add_argument("--weights", metavar="CHECKPOINT", help="export this checkpoint (from 'unetgen build --save')")
    export.add_argument(
        "--input-size", nargs="+", type=_input_size, metavar="N",
        help="the size to export and check at, one value per axis (default: the spec's)",
    )
    export.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset to write (default: {DEFAULT_OPSET})"
    )
    export.add_argument(
        "--static", action="store_true", help="fix every dimension (batch and size) for runtimes that need it"
    )
    export.add_argument("--batch", type=int, metavar="N", help="the batch size of a --static file (default: 1)")
    export.add_argument(
        "--heads", action="store_true",
        help="deep supervision: write every auxiliary head as a named output too (default: the main output only)",
    )
    export.add_argument("--no-verify", action="store_true", help="skip the checks (not recommended)")
    lower = export.add_argument_group(
        "lower precision", "an int8 or float16 file instead, checked against float32 on held-out images "
        "(label agreement, Dice per class, output error) and refused below the thresholds; see docs/onnx.md",
    )
    lower.add_argument(
        "--quantize", choices=("int8",),
        help="static int8 (QDQ, per-channel weights) calibrated on --calibration, for CPUs with VNNI",
    )
    lower.add_argument(
        "--precision", choices=("fp32", "fp16", "int8"), default="fp32",
        help="the file's precision: fp16 for GPU runtimes; int8 is --quantize int8 (default: fp32)",
    )
    lower.add_argument(
        "--calibration", metavar="DIR_OR_NPY",
        help="images like the ones to segment: a folder, or an .npy stack (N, C, *size); tiled as predict tiles "
        "them, one in five held out for the check",
    )
    lower.add_argument(
        "--check-images", metavar="DIR_OR_NPY", help="check on these images instead of held-out calibration ones"
    )
    lower.add_argument(
        "--min-agreement", type=float, default=0.99, metavar="F",
        help="least share of pixels labelled as by float32 (default 0.99)",
    )
    lower.add_argument(
        "--min-dice", type=float, default=0.95, metavar="F",
        help="least Dice of each class between the two label maps (default 0.95)",
    )
    lower.add_argument(
        "--max-error", type=float, metavar="F",
        help="largest output error, a share of float32's largest output (default: reported, not checked)",
    )
    export.set_defaults(func=_cmd_export)
    inspect = commands.add_parser(
        "inspect",
        help="print what an exported ONNX file takes: names, shapes, size rules, spec",
        description="Print the metadata unetgen export wrote into an ONNX file: input and output, the sizes it "
        "takes (lattice, minimum, border), the opset, the unetgen version and the spec.",
    )
    inspect.add_argument("file", metavar="FILE", help="an .onnx file written by unetgen export")
    inspect.add_argument("--json", action="store_true", help="print it as JSON")
    inspect.set_defaults(func=_cmd_inspect)
    import_cmd = commands.add_parser(
        "import",
        help="read another library's network as a unetgen spec (and its trained weights)",
        description="Read another library's network as a unetgen spec, and its trained weights as a unetgen "
        "checkpoint. Whatever unetgen cannot reproduce exactly is refused by name, never approximated.",
    )
    peers = import_cmd.add_subparsers(dest="peer", metavar="LIBRARY")
    peers.required = True
    nnunet = peers.add_parser(
        "nnunet",
        help="an nnU-Net v2 configuration (plans.json), and a checkpoint of it",
        description="Write the unetgen spec of one configuration of an nnU-Net v2 plans file (PlainConvUNet or "
        "ResidualEncoderUNet; the architecture section, or the old plan keys), and with --checkpoint a unetgen "
        "checkpoint with its trained weights (read with torch.load(weights_only=True)). See docs/nnunet.md.",
    )
    nnunet.add_argument("plans", metavar="PLANS", help="the plans file (nnUNetPlans.json, or plans.json of a model)")
    nnunet.add_argument("-c", "--configuration", required=True, metavar="NAME",
                        help="the configuration: 2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres, ...")
    nnunet.add_argument("--dataset-json", metavar="FILE",
                        help="the dataset.json (input channels and classes); default: the checkpoint's")
    nnunet.add_argument("--checkpoint", metavar="FILE",
                        help="an nnU-Net checkpoint of that configuration (fold_0/checkpoint_final.pth)")
    nnunet.add_argument("--out", required=True, metavar="PATH",
                        help="a .yaml file (the checkpoint beside it, .pt), or a folder: CONFIGURATION.yaml and .pt")
    nnunet.set_defaults(func=_cmd_import_nnunet)
    train_cmd = commands.add_parser(
        "train",
        help="train a network on folders of images and masks (the paper's recipe)",
        description="Train a network on folders of images and masks, paired by name, with the paper's recipe "
        "(Ronneberger et al. 2015, sec. 3: weight map, elastic deformations, SGD momentum 0.99) or a modern one. "
        "Everything is checked before training. Writes RUN_DIR/last.pt and best.pt (checkpoints that predict and "
        "export read), log.csv, log.json and curves.svg. Ctrl-C saves; --resume continues exactly. Runs under "
        "torchrun too. See docs/training.md.",
    )
    train_cmd.add_argument("spec", metavar="SPEC", help=f"a YAML spec file or a preset name ({presets})")
    train_cmd.add_argument("--images", required=True, metavar="DIR", help="the training images (.npy, PNG, TIFF, ...)")
    train_cmd.add_argument("--masks", required=True, metavar="DIR",
                           help="their label masks, one file per image of the same name (pixel value = class)")
    train_cmd.add_argument("--instances", metavar="DIR",
                           help="instance labels for the weight map (default: connected components of the masks)")
    held_out = train_cmd.add_mutually_exclusive_group()
    held_out.add_argument("--val-images", metavar="DIR", help="validation images (with --val-masks)")
    held_out.add_argument("--val-fraction", type=float, metavar="F",
                          help="hold out this share of the training pairs for validation instead (e.g. 0.2)")
    train_cmd.add_argument("--val-masks", metavar="DIR", help="the validation images' masks")
    train_cmd.add_argument("--out", required=True, metavar="RUN_DIR", help="the run's folder (made if missing)")
    train_cmd.add_argument("--epochs", type=int, metavar="N", help="passes over the training images (default 50)")
    train_cmd.add_argument("--batch-size", type=int, metavar="N",
                           help="patches per step, per process (default: the recipe's, paper 1, modern 2)")
    train_cmd.add_argument("--memory", metavar="SIZE",
                           help="memory one step may take, e.g. 4GiB: the batch is the largest that fits it with "
                                "the measured overhead (or --batch-size, checked against it)")
    train_cmd.add_argument("--patch-size", nargs="+", type=_input_size, metavar="N",
                           help="the input patch, on the network's lattice (default: the largest that fits)")
    train_cmd.add_argument("--lr", type=float, metavar="LR",
                           help="learning rate (default: sgd 0.003, adam 3e-4, sgd-poly 0.01)")
    train_cmd.add_argument("--seed", type=int, metavar="N",
                           help="seed of the weights, data order, augmentation, dropout (default 0)")
    train_cmd.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last.pt")
    train_cmd.add_argument("--device", metavar="{cpu,cuda}", help="where to train (default cpu)")
    train_cmd.add_argument("--precision", metavar="{fp32,bf16,fp16}", help="autocast precision (default fp32)")
    train_cmd.add_argument("--recipe", metavar="{paper,modern}",
                           help="paper: SGD 0.99 + weighted CE; modern: Adam + CE + Dice (default paper)")
    train_cmd.add_argument("--optimizer", metavar="{sgd,adam,sgd-poly}", help="override the recipe's optimizer")
    train_cmd.add_argument("--loss", metavar="{ce,weighted-ce,ce-dice}", help="override the recipe's loss")
    train_cmd.add_argument("--augment", metavar="{paper,none}", help="augmentation (default paper)")
    train_cmd.add_argument("--normalization", metavar="{zscore,percentile,none}",
                           help="intensity normalisation, saved with the network (default zscore)")
    train_cmd.add_argument("--w0", type=float, metavar="W", help="the weight map's border weight (default 10)")
    train_cmd.add_argument("--sigma", type=float, metavar="PX", help="the weight map's border width (default 5)")
    train_cmd.add_argument("--patches-per-image", type=int, metavar="N", help="patches per image per epoch (default 1)")
    train_cmd.set_defaults(func=_cmd_train)
    schema = commands.add_parser(
        "schema",
        help="print the spec's JSON Schema, for editors' completion and checks of spec files",
        description="Print the JSON Schema (draft 2020-12) of a spec file, made from the spec's model: every field "
        "with its type, bounds, choices and description; unknown fields are refused. Point an editor at it with "
        "a first line '# yaml-language-server: $schema=PATH' in the YAML file. Checks between fields are left to "
        "'unetgen build'.",
    )
    schema.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead (atomically)")
    schema.set_defaults(func=_cmd_schema)
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
    except BrokenPipeError:  # `unetgen ... | head`: the reader left; stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
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
