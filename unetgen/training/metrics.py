"""How well a segmentation matches its labels: Dice and IoU per class (validation), and instance-level scores (the
weight-map benchmark): average precision at IoU 0.5 and the share of touching cells that are split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class Overlap:
    """Pixel counts per class, summed over images: true positives, false positives, false negatives.

    Attributes:
        tp: per class, pixels of the class predicted as it.
        fp: per class, pixels of other classes predicted as it.
        fn: per class, pixels of the class predicted as another.
    """

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @classmethod
    def empty(cls, classes: int) -> Overlap:
        """No pixels yet."""
        return cls(np.zeros(classes, np.int64), np.zeros(classes, np.int64), np.zeros(classes, np.int64))

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Count one image's pixels.

        Args:
            predicted: the predicted class of each pixel.
            truth: the true class of each pixel (the same shape).
        """
        classes = len(self.tp)
        pairs = np.bincount(truth.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel(),
                            minlength=classes * classes).reshape(classes, classes)
        diagonal = np.diag(pairs)
        self.tp += diagonal
        self.fp += pairs.sum(axis=0) - diagonal
        self.fn += pairs.sum(axis=1) - diagonal

    def dice(self) -> list[float]:
        """Per class ``2·tp / (2·tp + fp + fn)``; NaN for a class neither predicted nor present."""
        return [_ratio(2 * t, 2 * t + p + n) for t, p, n in zip(self.tp, self.fp, self.fn)]

    def iou(self) -> list[float]:
        """Per class ``tp / (tp + fp + fn)``; NaN for a class neither predicted nor present."""
        return [_ratio(t, t + p + n) for t, p, n in zip(self.tp, self.fp, self.fn)]


def _ratio(top: float, bottom: float) -> float:
    """``top / bottom``, NaN for 0 / 0."""
    return float(top) / float(bottom) if bottom else math.nan


def foreground_mean(values: list[float]) -> float:
    """The mean over the classes after the background (class 0), NaNs left out; with one class, its value."""
    chosen = [v for v in (values[1:] if len(values) > 1 else values) if not math.isnan(v)]
    return float(np.mean(chosen)) if chosen else math.nan


def instances_of(labels: np.ndarray) -> np.ndarray:
    """The connected components of a segmentation's foreground (``labels > 0``; pixels sharing a face connect)."""
    components, _ = ndimage.label(np.asarray(labels) > 0)
    return components


def _iou_matrix(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU of every true instance with every predicted one, and the overlaps (pixels), background left out."""
    t_count, p_count = int(truth.max()), int(predicted.max())
    overlap = np.bincount(truth.ravel().astype(np.int64) * (p_count + 1) + predicted.ravel().astype(np.int64),
                          minlength=(t_count + 1) * (p_count + 1)).reshape(t_count + 1, p_count + 1)
    t_sizes, p_sizes = overlap.sum(axis=1), overlap.sum(axis=0)
    union = t_sizes[:, None] + p_sizes[None, :] - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
    return iou[1:, 1:], overlap[1:, 1:]


@dataclass(frozen=True)
class InstanceScores:
    """Instance-level scores of one image or a set of images.

    Attributes:
        true_positives: true cells matched by a predicted cell with IoU above the threshold (at most one each).
        false_positives: predicted cells matched to none.
        false_negatives: true cells matched by none.
        touching_pairs: pairs of true cells that touch (share a face).
        split_pairs: of those, the pairs whose cells are mostly covered by two different predicted cells.
    """

    true_positives: int
    false_positives: int
    false_negatives: int
    touching_pairs: int
    split_pairs: int

    @property
    def average_precision(self) -> float:
        """``TP / (TP + FP + FN)`` at the IoU threshold (the Data Science Bowl 2018's "average precision", as
        StarDist and Cellpose report it)."""
        total = self.true_positives + self.false_positives + self.false_negatives
        return self.true_positives / total if total else math.nan

    @property
    def split_share(self) -> float:
        """The share of touching pairs that the prediction separates."""
        return self.split_pairs / self.touching_pairs if self.touching_pairs else math.nan

    def __add__(self, other: InstanceScores) -> InstanceScores:
        """The counts of two images (or sets) together."""
        return InstanceScores(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values())))


def touching_pairs(instances: np.ndarray) -> set[tuple[int, int]]:
    """The pairs of instances that share a face somewhere (neighbours along an axis)."""
    pairs: set[tuple[int, int]] = set()
    for axis in range(instances.ndim):
        a = np.moveaxis(instances, axis, 0)[:-1].ravel()
        b = np.moveaxis(instances, axis, 0)[1:].ravel()
        touch = (a > 0) & (b > 0) & (a != b)
        for x, y in zip(a[touch].tolist(), b[touch].tolist()):
            pairs.add((min(x, y), max(x, y)))
    return pairs


def instance_scores(truth: np.ndarray, predicted: np.ndarray, threshold: float = 0.5) -> InstanceScores:
    """Match predicted cells to true ones and count the touching pairs the prediction splits.

    Args:
        truth: the true instance labels (0: background).
        predicted: the predicted instance labels (e.g. :func:`instances_of` of a predicted mask).
        threshold: the IoU a match needs (above 0.5 a true cell can match one predicted cell at most).

    Returns:
        The counts.
    """
    truth = np.asarray(truth)
    predicted = np.asarray(predicted)
    iou, overlap = _iou_matrix(truth, predicted)
    matched = iou > threshold
    tp = int(np.count_nonzero(matched.any(axis=1)))
    fp = int(predicted.max()) - int(np.count_nonzero(matched.any(axis=0)))
    fn = int(truth.max()) - tp
    pairs = touching_pairs(truth)
    best = overlap.argmax(axis=1) if overlap.size else np.zeros(0, np.int64)
    covered = overlap.max(axis=1) > 0 if overlap.size else np.zeros(0, bool)
    split = sum(1 for a, b in pairs if covered[a - 1] and covered[b - 1] and best[a - 1] != best[b - 1])
    return InstanceScores(tp, fp, fn, len(pairs), split)


__all__ = ["Overlap", "foreground_mean", "instances_of", "InstanceScores", "touching_pairs", "instance_scores"]
