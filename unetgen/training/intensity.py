"""Intensity normalisation: how an image's values are mapped before the network sees them, in training and after.

The choice is made once, for training, and travels with the network: recorded in the checkpoint
(:func:`unetgen.save`), applied by :func:`unetgen.predict` and written into an exported ONNX file's metadata
(``unetgen.intensity``), so a trained network never meets raw values it was not trained on. Three methods:

* ``zscore`` (default): each image, each channel: subtract its mean, divide by its standard deviation — nnU-Net's
  scheme for MRI and microscopy, where intensities have no fixed meaning between images;
* ``percentile``: for CT-like data, whose values are physical units: clip to the 0.5th and 99.5th percentiles of
  the training set's foreground (pixels whose label is not 0), then subtract the mean and divide by the standard
  deviation of the clipped foreground values — one set of numbers for every image (nnU-Net's ``CTNormalization``);
* ``none``: the values as they are, as float32.

Pure numpy: the ONNX reader and the prediction code import it without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UNetGenError, did_you_mean

#: The methods, in the order the CLI lists them.
METHODS = ("zscore", "percentile", "none")
#: The percentiles ``percentile`` clips to (nnU-Net's).
DEFAULT_PERCENTILES = (0.5, 99.5)
#: Standard deviations below this count as 0: a constant channel becomes zeros instead of noise times 10^8.
_TINY = 1e-8
#: ``percentile`` reads at most this many values per channel (evenly spaced over the foreground) to fit.
_MAX_VALUES = 10_000_000


@dataclass(frozen=True)
class Intensity:
    """An intensity normalisation: the method and, for ``percentile``, the training set's numbers per channel.

    Attributes:
        method: ``zscore``, ``percentile`` or ``none``.
        percentiles: the percentiles ``percentile`` clipped to when it was fitted.
        low: per channel, the value below which ``percentile`` clips.
        high: per channel, the value above which it clips.
        mean: per channel, the mean of the clipped foreground values.
        std: per channel, their standard deviation.
    """

    method: str = "zscore"
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Normalise an image.

        Args:
            pixels: ``(channels, *spatial)``, integers or floats.

        Returns:
            The normalised image, float32, a new array.

        Raises:
            UNetGenError: when the image's channel count is not the one ``percentile`` was fitted on.
        """
        values = np.asarray(pixels, dtype=np.float32).copy()
        if self.method == "none":
            return values
        if self.method == "zscore":
            for channel in values:
                mean, std = channel.mean(dtype=np.float64), channel.std(dtype=np.float64)
                channel -= np.float32(mean)
                channel /= np.float32(std if std > _TINY else 1.0)
            return values
        if len(values) != len(self.low):
            raise UNetGenError(
                f"intensity: fitted on {len(self.low)} channel(s), the image has {len(values)}; train again on images "
                "with the network's channels"
            )
        for index, channel in enumerate(values):
            np.clip(channel, np.float32(self.low[index]), np.float32(self.high[index]), out=channel)
            channel -= np.float32(self.mean[index])
            channel /= np.float32(self.std[index] if self.std[index] > _TINY else 1.0)
        return values

    def to_dict(self) -> dict[str, Any]:
        """The normalisation as JSON-ready data (the form stored in checkpoints and ONNX metadata)."""
        if self.method != "percentile":
            return {"method": self.method}
        return {"method": self.method, "percentiles": list(self.percentiles), "low": list(self.low),
                "high": list(self.high), "mean": list(self.mean), "std": list(self.std)}

    def describe(self) -> str:
        """In words, e.g. ``z-score per image and channel``."""
        if self.method == "zscore":
            return "z-score per image and channel"
        if self.method == "none":
            return "none (raw values as float32)"
        channels = "; ".join(
            f"clip {lo:.4g}…{hi:.4g}, mean {m:.4g}, std {s:.4g}"
            for lo, hi, m, s in zip(self.low, self.high, self.mean, self.std)
        )
        low, high = self.percentiles
        return f"percentile clipping ({low:g}–{high:g}% of the training foreground): {channels}"


def intensity_from_dict(data: Any, where: str = "intensity") -> Intensity:
    """Read a normalisation back from :meth:`Intensity.to_dict`'s form.

    Args:
        data: the stored data (None for files written before normalisation was recorded: raw values).
        where: what to call it in messages (a file and its entry).

    Returns:
        The normalisation (``none`` for None).

    Raises:
        UNetGenError: when the data is not such an entry.
    """
    if data is None:
        return Intensity("none")
    if not isinstance(data, Mapping) or data.get("method") not in METHODS:
        method = data.get("method") if isinstance(data, Mapping) else data
        raise UNetGenError(
            f"{where}: method {method!r} is not one of {', '.join(METHODS)}{did_you_mean(method, METHODS)}; the "
            "file is damaged or from a newer unetgen"
        )
    if data["method"] != "percentile":
        return Intensity(data["method"])
    try:
        fields = {key: tuple(float(v) for v in data[key]) for key in ("percentiles", "low", "high", "mean", "std")}
    except (KeyError, TypeError, ValueError) as exc:
        raise UNetGenError(f"{where}: a percentile entry without its numbers ({type(exc).__name__}: {exc})") from None
    counts = {len(fields[key]) for key in ("low", "high", "mean", "std")}
    if len(counts) != 1 or len(fields["percentiles"]) != 2 or not all(np.isfinite(v).all() for v in fields.values()):
        raise UNetGenError(f"{where}: a percentile entry needs finite low, high, mean and std, one per channel")
    return Intensity("percentile", **fields)  # type: ignore[arg-type]


def fit_intensity(
    method: str,
    images: Iterable[np.ndarray],
    labels: Iterable[np.ndarray | None] = (),
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> Intensity:
    """Choose a normalisation from the training images (only ``percentile`` needs them).

    Args:
        method: ``zscore``, ``percentile`` or ``none``.
        images: the training images, each ``(channels, *spatial)``.
        labels: their label maps (``*spatial``), whose non-zero pixels are the foreground ``percentile`` fits on;
            an image without labels, or without foreground, counts with all its pixels.
        percentiles: where ``percentile`` clips.

    Returns:
        The normalisation.

    Raises:
        UNetGenError: for an unknown method.
    """
    if method not in METHODS:
        raise UNetGenError(f"normalisation {method!r}: give one of {', '.join(METHODS)}{did_you_mean(method, METHODS)}")
    if method != "percentile":
        return Intensity(method)
    per_channel: list[list[np.ndarray]] = []
    label_list = list(labels)
    for index, image in enumerate(images):
        mask = label_list[index] if index < len(label_list) else None
        chosen = mask > 0 if mask is not None and np.any(mask > 0) else None
        for channel, values in enumerate(image):
            if len(per_channel) <= channel:
                per_channel.append([])
            per_channel[channel].append(np.asarray(values[chosen] if chosen is not None else values.ravel()))
    low, high, mean, std = [], [], [], []
    for parts in per_channel:
        values = np.concatenate(parts).astype(np.float64)
        if values.size > _MAX_VALUES:
            values = values[:: -(-values.size // _MAX_VALUES)]
        lo, hi = np.percentile(values, list(percentiles))
        clipped = np.clip(values, lo, hi)
        low.append(float(lo))
        high.append(float(hi))
        mean.append(float(clipped.mean()))
        std.append(float(clipped.std()))
    return Intensity("percentile", (float(percentiles[0]), float(percentiles[1])), tuple(low), tuple(high),
                     tuple(mean), tuple(std))


__all__ = ["METHODS", "DEFAULT_PERCENTILES", "Intensity", "intensity_from_dict", "fit_intensity"]
