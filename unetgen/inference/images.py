"""Reading images and writing segmentations: ``.npy`` arrays, and PNG, TIFF (and JPEG, BMP) files through Pillow.

Layout: arrays read from image files are channels last, as the files store them: ``(H, W)`` for grey, ``(H, W, C)``
for colour, and a multi-page TIFF is a volume ``(pages, H, W[, C])``. ``.npy`` arrays are returned as saved.
Written files are replaced atomically (:func:`unetgen.files.atomic_write`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from ..errors import UNetGenError
from ..files import atomic_write
from ..text import size_text

#: File types read and written through Pillow.
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: Every readable suffix.
INPUT_SUFFIXES = (".npy", *IMAGE_SUFFIXES)
#: Suffixes a segmentation can be written to: ``.npy`` (labels or logits), PNG and TIFF (labels).
OUTPUT_SUFFIXES = (".npy", ".png", ".tif", ".tiff")

#: Pillow modes whose pixels become one channel each, as numpy reads them.
_MODE_CHANNELS = {"L": "grey", "I": "grey (32-bit)", "I;16": "grey (16-bit)", "I;16B": "grey (16-bit)",
                  "F": "grey (float)", "LA": "grey + alpha", "RGB": "RGB", "RGBA": "RGBA"}


@dataclass(frozen=True)
class Image:
    """An array read from a file, with how its axes were read.

    Attributes:
        pixels: the array.
        channels_last: whether its last axis holds channels (image files), or the layout is the caller's
            (``.npy``: None).
        words: what was read, e.g. ``PNG 517×300 RGB``.
    """

    pixels: np.ndarray
    channels_last: bool | None
    words: str


def read_image(path: str | Path) -> Image:
    """Read an image or volume: a ``.npy`` array, or a PNG, TIFF, JPEG or BMP file.

    Palette images are expanded to RGB (RGBA with transparency) and 1-bit images to grey 0/255; a multi-page TIFF
    is read as a volume, its pages the first axis.

    Args:
        path: the file.

    Returns:
        The array and how it was read.

    Raises:
        UNetGenError: when the file is missing, of an unknown type, or unreadable.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise UNetGenError(
            f"{path}: unknown image type '{path.suffix}'; give a file ending in {', '.join(INPUT_SUFFIXES)}"
        )
    if not path.is_file():
        raise UNetGenError(f"{path}: no such file")
    if suffix == ".npy":
        try:
            pixels = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UNetGenError(f"{path}: not a numeric .npy array ({exc})") from None
        except (OSError, EOFError) as exc:
            raise UNetGenError(f"{path}: not a readable .npy file ({exc})") from None
        if not isinstance(pixels, np.ndarray):
            raise UNetGenError(f"{path}: holds several arrays (.npz); give one array saved with numpy.save")
        return Image(pixels, None, f".npy {pixels.dtype} array {tuple(pixels.shape)}")
    try:
        with PILImage.open(path) as handle:
            frames = getattr(handle, "n_frames", 1)
            pages = []
            for index in range(frames):
                handle.seek(index)
                pages.append(_frame(handle))
            kind = handle.format or suffix[1:].upper()
            mode = handle.mode
    except PILImage.DecompressionBombError as exc:
        raise UNetGenError(f"{path}: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UNetGenError(f"{path}: not a readable image ({exc})") from None
    pixels = pages[0] if len(pages) == 1 else np.stack(pages)
    if len(pages) > 1 and len({page.shape for page in pages}) > 1:
        raise UNetGenError(f"{path}: its {len(pages)} pages differ in size; a volume needs pages of one size")
    spatial = pixels.shape[: (2 if len(pages) == 1 else 3)]
    described = _MODE_CHANNELS.get(mode, f"{mode} read as RGB")
    count = pixels.shape[-1] if pixels.ndim > len(spatial) else 1
    words = f"{kind} {size_text(spatial)}" + (f" ({len(pages)} pages)" if len(pages) > 1 else "")
    return Image(pixels, True, f"{words}, {described}: {count} channel{'s' if count > 1 else ''}, channels last")


def _frame(handle: Any) -> np.ndarray:
    """One page as an array, in a mode numpy reads as numbers."""
    mode = handle.mode
    if mode == "1":
        frame = handle.convert("L")
    elif mode == "P":
        frame = handle.convert("RGBA" if "transparency" in handle.info else "RGB")
    elif mode in _MODE_CHANNELS:
        frame = handle
    else:  # CMYK, YCbCr, LAB, HSV, ...
        frame = handle.convert("RGB")
    return np.asarray(frame)


def output_kind(path: str | Path, logits: bool, spatial_dims: int) -> str:
    """Check, before any work, that a segmentation can be written to ``path``; return its suffix.

    Args:
        path: the file to write.
        logits: whether logits (floats) rather than labels are written.
        spatial_dims: the network's spatial axes.

    Raises:
        UNetGenError: for an unknown suffix, logits to an image file, or a volume to a PNG.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise UNetGenError(
            f"{path}: unknown output type '{path.suffix}'; give a file ending in {', '.join(OUTPUT_SUFFIXES)}"
        )
    if logits and suffix != ".npy":
        raise UNetGenError(f"{path}: an image file holds labels; write logits to a .npy file")
    if suffix == ".png" and spatial_dims != 2:
        raise UNetGenError(f"{path}: a PNG holds a 2D image; write a {spatial_dims}D result to .npy or .tif")
    return suffix


def write_result(path: str | Path, result: np.ndarray) -> Path:
    """Write labels or logits atomically: ``.npy`` as they are; PNG or TIFF labels as 8- or 16-bit grey (one page
    per slice of a volume), pixel value = class.

    Args:
        path: ``.npy``, ``.png``, ``.tif`` or ``.tiff``.
        result: the array to write.

    Returns:
        The path written.

    Raises:
        UNetGenError: when the file cannot be written, or the labels do not fit 16 bits.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return atomic_write(path, lambda handle: np.save(handle, result, allow_pickle=False))
    if result.dtype.kind not in "ui" or (result.size and int(result.max()) > 65535):
        raise UNetGenError(f"{path}: an image file holds labels from 0 to 65535; write to .npy instead")
    labels = result.astype(np.uint8 if result.size == 0 or int(result.max()) < 256 else np.uint16)
    pages = [labels] if labels.ndim == 2 else list(labels)
    images = [PILImage.fromarray(np.ascontiguousarray(page)) for page in pages]
    buffer = io.BytesIO()
    if suffix == ".png":
        images[0].save(buffer, format="PNG")
    else:
        images[0].save(buffer, format="TIFF", save_all=True, append_images=images[1:], compression="tiff_deflate")
    data = buffer.getvalue()
    return atomic_write(path, lambda handle: handle.write(data))
