"""An image array checked against a network before any work: dtype, axes, channels, finite values."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import SizeError, UNetGenError
from ..spec.fields import UNetSpec
from ..text import AXIS_LETTERS

#: Where an image's channel axis is: first (torch's layout) or last (image files').
Channels = Literal["first", "last"]


def check_image(image: Any, spec: UNetSpec, channels: Channels = "first", where: str = "image") -> np.ndarray:
    """Check an image against the network and return it as ``(channels, *spatial)`` (a view where possible).

    Layout: an image with one axis per spatial axis has one channel; one more axis holds the channels, first
    (``(C, H, W)``, torch's layout) or last (``(H, W, C)``, image files') as ``channels`` says.

    Args:
        image: a numpy array (or a torch tensor) of integers or floats.
        spec: the network.
        channels: where the channel axis is: ``first`` or ``last``.
        where: what to call the image in messages (a file name).

    Returns:
        The image as ``(in_channels, *spatial)``, in its own dtype.

    Raises:
        UNetGenError: for an empty array, a dtype that is not integer or float (bool, complex, object, text),
            NaN or infinite values.
        SizeError: for the wrong number of axes, or a channel count that is not the network's.
    """
    if channels not in ("first", "last"):
        raise UNetGenError(f"channels {channels!r}: give 'first' or 'last'")
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        try:
            image = np.asarray(image)
        except (ValueError, TypeError) as exc:
            raise UNetGenError(f"{where}: not an array ({exc})") from None
    kind = image.dtype.kind
    if kind not in "uif":
        what = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes"}.get(
            kind, f"values of type {image.dtype}"
        )
        raise UNetGenError(f"{where}: holds {what}; give integers or floats (e.g. image.astype('float32'))")
    dims, cin = spec.spatial_dims, spec.in_channels
    spatial = ", ".join(AXIS_LETTERS[dims])
    layouts = f"({cin}, {spatial}), or ({spatial}, {cin}) with channels last"
    if cin == 1:
        layouts = f"({spatial}), {layouts}"
    shape = tuple(image.shape)
    if image.ndim == dims:
        if cin != 1:
            raise SizeError(
                f"{where}: shape {shape} has no channel axis; the {dims}D network takes {cin} channels: {layouts}"
            )
        image = image[np.newaxis]
    elif image.ndim == dims + 1:
        if channels == "last":
            image = np.moveaxis(image, -1, 0)
        if image.shape[0] != cin:
            other = shape[0] if channels == "last" else shape[-1]
            hint = ""
            if cin == 1 and image.shape[0] in (3, 4):
                hint = "; convert a colour image to grey first (e.g. Pillow's Image.convert('L'))"
            if other == cin:
                flip = "first" if channels == "last" else "last"
                hint = (
                    f"; its {flip} axis has {cin}: if the channels are {flip}, say so (channels='{flip}', "
                    f"--channels-{flip})"
                )
            raise SizeError(
                f"{where}: shape {shape} has {image.shape[0]} channels (channels {channels}); the network takes "
                f"{cin}{hint}"
            )
    else:
        raise SizeError(f"{where}: shape {shape} has {image.ndim} axes; the {dims}D network takes {layouts}")
    if image.size == 0:
        raise UNetGenError(f"{where}: shape {shape} is empty; give an image with pixels")
    if kind == "f":
        finite = np.isfinite(image)
        if not finite.all():
            bad = image.size - int(finite.sum())
            first = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise UNetGenError(
                f"{where}: {bad} NaN or infinite value{'s' if bad > 1 else ''} (first at {first} in (C, *spatial)); "
                "replace them (e.g. numpy.nan_to_num) before predicting"
            )
        if image.dtype.itemsize > 4 and np.abs(image).max() > np.finfo(np.float32).max:
            raise UNetGenError(f"{where}: values beyond the range of float32, which the network computes in")
    return image


__all__ = ["Channels", "check_image"]
