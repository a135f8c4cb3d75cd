"""Training data: images and masks paired by name from folders, read as ``predict`` reads them, and checked.

Every problem is found before training starts and named in one line: an empty or missing folder, an image without a
mask (or the reverse), a file that cannot be read, a channel count that is not the network's, a mask of another size
than its image, labels the network has no class for, negative instance labels. (Instance labels may cover the
borders that a mask marks as background between touching cells, as the paper's data does.)

Files: ``.npy`` arrays (channels first, ``(C, *spatial)``, or ``(*spatial)`` for one channel) and PNG, TIFF (a
multi-page TIFF is a volume), JPEG and BMP files (channels last), as :func:`unetgen.inference.images.read_image`
reads them. A mask holds one class per pixel (``0 … classes − 1``; one output channel: 0 or 1); instance labels, when
given, one cell per value (0: no cell). Pairs are matched by file name without its suffix: ``images/a.png`` with
``masks/a.png`` or ``masks/a.npy``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UNetGenError
from ..inference.image_checks import check_image
from ..inference.images import INPUT_SUFFIXES, read_image
from ..spec.fields import UNetSpec
from ..text import size_text

#: Problems listed before "and N more".
_SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class Pair:
    """An image and its mask (and instance labels), matched by name.

    Attributes:
        name: the file name without suffix.
        image: the image file.
        mask: the mask file.
        instances: the instance labels' file, or None.
    """

    name: str
    image: Path
    mask: Path
    instances: Path | None = None


@dataclass
class Sample:
    """One training or validation image, read and checked.

    Attributes:
        name: the pair's name.
        pixels: ``(channels, *spatial)``: the image as read (``raw``), or normalised for training.
        labels: the class of each pixel, ``(*spatial)``, unsigned integers.
        instances: the cells, ``(*spatial)`` int32 (0: none), or None.
        weights: the paper's weight map, float32 ``(*spatial)``, once computed.
    """

    name: str
    pixels: np.ndarray
    labels: np.ndarray
    instances: np.ndarray | None = None
    weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, ...]:
        """The spatial size."""
        return tuple(int(n) for n in self.labels.shape)


class Problems:
    """Collects the problems found in a data set, to report them all at once (one line each)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        """Record one problem."""
        self.lines.append(line)

    def raise_if_any(self) -> None:
        """Raise them, as one :class:`~unetgen.errors.UNetGenError` with a line per problem.

        Raises:
            UNetGenError: when any was found.
        """
        if self.lines:
            shown = self.lines[:_SHOWN_PROBLEMS]
            more = len(self.lines) - len(shown)
            raise UNetGenError("\n".join(shown + ([f"... and {more} more problems like these"] if more else [])))


def list_images(folder: str | Path, what: str) -> dict[str, Path]:
    """The readable files in a folder, by name without suffix.

    Args:
        folder: the folder.
        what: what the files are, for messages (``--images``).

    Returns:
        ``{name: path}``, sorted by name.

    Raises:
        UNetGenError: when the folder is missing, holds no such files, or holds two files of one name.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UNetGenError(f"{what} {folder}: no such folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in INPUT_SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise UNetGenError(
                f"{what} {folder}: {found[path.stem].name} and {path.name} have one name; pairs are matched by name, "
                "so keep one of them"
            )
        found[path.stem] = path
    if not found:
        raise UNetGenError(f"{what} {folder}: no images in it (files ending in {', '.join(INPUT_SUFFIXES)})")
    return found


def match_pairs(
    images: str | Path, masks: str | Path, instances: str | Path | None = None, *, flag: str = "--"
) -> list[Pair]:
    """Pair the images in one folder with the masks (and instance labels) of the same names in others.

    Args:
        images: the images' folder.
        masks: the masks' folder.
        instances: the instance labels' folder, or None.
        flag: the options' prefix for messages (``--`` or ``--val-``).

    Returns:
        The pairs, sorted by name.

    Raises:
        UNetGenError: with one line per image without a mask, mask without an image, or image without instances.
    """
    found = list_images(images, f"{flag}images")
    labelled = list_images(masks, f"{flag}masks")
    cells = list_images(instances, f"{flag}instances") if instances is not None else None
    problems = Problems()
    for name, path in found.items():
        if name not in labelled:
            problems.add(f"{path}: no mask of that name in {masks}{_nearby(name, labelled)}")
        elif cells is not None and name not in cells:
            problems.add(f"{path}: no instance labels of that name in {instances}{_nearby(name, cells)}")
    for name, path in labelled.items():
        if name not in found:
            problems.add(f"{path}: no image of that name in {images}{_nearby(name, found)}")
    problems.raise_if_any()
    return [Pair(name, path, labelled[name], cells[name] if cells is not None else None)
            for name, path in found.items()]


def _nearby(name: str, names: dict[str, Path]) -> str:
    """`` (there: a.png, b.png, ...)`` for a message about an unmatched name."""
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.9)  # cells_000 is no typo of cells_004
    if close:
        return f" (did you mean {names[close[0]].name}?)"
    shown = ", ".join(path.name for path in list(names.values())[:3])
    return f" (there: {shown}{', ...' if len(names) > 3 else ''})"


def split(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Hold out a share of the pairs for validation, chosen by the seed.

    Args:
        pairs: all pairs.
        fraction: the share to hold out (0 to below 1); at least one pair when above 0.
        seed: the run's seed.

    Returns:
        ``(training, validation)``, each sorted by name.

    Raises:
        UNetGenError: when no pair would be left for training.
    """
    if not fraction:
        return list(pairs), []
    count = max(1, round(fraction * len(pairs)))
    if count >= len(pairs):
        raise UNetGenError(
            f"--val-fraction {fraction:g}: holds out {count} of {len(pairs)} images, leaving none to train on; give a "
            "smaller fraction or more images"
        )
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = set(order[:count].tolist())
    return ([p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held])


def load_samples(pairs: Sequence[Pair], spec: UNetSpec) -> list[Sample]:
    """Read and check every pair against the network: channels, sizes, label values, instance labels.

    Args:
        pairs: from :func:`match_pairs`.
        spec: the network (its input channels, spatial axes and classes).

    Returns:
        The samples, in the pairs' order, with the images as read (not normalised).

    Raises:
        UNetGenError: with one line per problem found, before anything is trained.
    """
    problems = Problems()
    classes = max(spec.out_channels, 2)
    samples = []
    for pair in pairs:
        sample = _load(pair, spec, classes, problems)
        if sample is not None:
            samples.append(sample)
    problems.raise_if_any()
    return samples


def _load(pair: Pair, spec: UNetSpec, classes: int, problems: Problems) -> Sample | None:
    """One pair read and checked; its problems recorded (None when it has any)."""
    try:
        image = read_image(pair.image)
        pixels = check_image(image.pixels, spec, "last" if image.channels_last else "first", where=str(pair.image))
    except UNetGenError as exc:
        problems.add(str(exc))
        return None
    size = pixels.shape[1:]
    labels = _label_map(pair.mask, size, "mask", problems)
    if labels is None:
        return None
    values = np.unique(labels)
    if values[0] < 0 or values[-1] >= classes:
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        hint = "; save it as 0/1" if set(values.tolist()) <= {0, 255} else (
            f"; the spec's out_channels ({spec.out_channels}) sets the classes"
        )
        problems.add(
            f"{pair.mask}: labels {shown}; the network has {classes} classes (labels 0–{classes - 1}){hint}"
        )
        return None
    labels = labels.astype(np.uint8 if classes <= 256 else np.int32)
    instances = None
    if pair.instances is not None:
        instances = _label_map(pair.instances, size, "instance labels", problems)
        if instances is None:
            return None
        if instances.min() < 0:
            problems.add(f"{pair.instances}: negative instance labels; give 0 for no cell and 1, 2, ... for cells")
            return None
        instances = instances.astype(np.int32)
    return Sample(pair.name, pixels, labels, instances)


def _label_map(path: Path, size: tuple[int, ...], what: str, problems: Problems) -> np.ndarray | None:
    """A mask or instance-label file as integers of the image's size; its problems recorded (None when any)."""
    try:
        values = read_image(path).pixels
    except UNetGenError as exc:
        problems.add(str(exc))
        return None
    if values.ndim != len(size):
        if values.ndim == len(size) + 1 and values.shape[-1] in (2, 3, 4):
            problems.add(
                f"{path}: shape {tuple(values.shape)} has {values.shape[-1]} channels; a {what} holds one label per "
                "pixel: save it as a grey image (Pillow mode L or I;16) or a .npy array"
            )
        else:
            problems.add(f"{path}: shape {tuple(values.shape)}; a {what} of the image's size {size_text(size)} "
                         "holds one label per pixel")
        return None
    if tuple(values.shape) != tuple(size):
        problems.add(f"{path}: {size_text(values.shape)}, but its image is {size_text(size)}; give a {what} of the "
                     "image's size")
        return None
    if values.dtype.kind == "b":
        return values.astype(np.uint8)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.round(values)):
            problems.add(f"{path}: holds fractions; a {what} holds whole numbers (labels)")
            return None
        return values.astype(np.int64)
    if values.dtype.kind not in "ui":
        problems.add(f"{path}: holds values of type {values.dtype}; a {what} holds whole numbers (labels)")
        return None
    return values


__all__ = ["Pair", "Sample", "Problems", "list_images", "match_pairs", "split", "load_samples"]
