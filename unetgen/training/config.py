"""What a training run is asked to do: the options of ``unetgen train`` as one record, the two recipes' defaults,
and the checks of each value on its own (checks against the data and the network are the loop's, before training).

Recipes (``recipe``) fill in what is not given:

========== ===================================== ============================ ==========
recipe     optimizer                             loss                         batch size
========== ===================================== ============================ ==========
``paper``  SGD, momentum 0.99, lr 0.003          weighted cross-entropy       1
``modern`` Adam, lr 3·10⁻⁴                        cross-entropy + Dice         2
========== ===================================== ============================ ==========

Both augment as the paper does (:mod:`unetgen.training.augment`). Ronneberger et al. 2015, sec. 3: "we favor large
input tiles over a large batch size and hence reduce the batch to a single image. Accordingly we use a high momentum
(0.99) such that a large number of the previously seen training samples determine the update"; the paper gives no
learning rate. With momentum 0.99 the step is about 100 times the learning rate: 0.01 diverged on the weight-map
benchmark (one network of four, within its first epoch, benchmarks/README.md), 0.003 trained all of them. ``sgd-poly``
is nnU-Net's: SGD with Nesterov momentum 0.99, weight decay 3·10⁻⁵, gradients clipped to norm 12, lr 0.01 falling as
``(1 − epoch/epochs)^0.9``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResourceError, UNetGenError, did_you_mean
from ..planning.limits import parse_bytes
from .intensity import METHODS
from .loss import LOSSES

RECIPES = ("paper", "modern")
OPTIMIZERS = ("sgd", "adam", "sgd-poly")
AUGMENTATIONS = ("paper", "none")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")

#: What each recipe fills in: optimizer, loss, batch size.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {"optimizer": "sgd", "loss": "weighted-ce", "batch_size": 1},
    "modern": {"optimizer": "adam", "loss": "ce-dice", "batch_size": 2},
}
#: Each optimizer's default learning rate.
LEARNING_RATES = {"sgd": 0.003, "adam": 3e-4, "sgd-poly": 0.01}


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings (``unetgen train``'s options); None means "the recipe's" or "worked out".

    Attributes:
        spec: the network (a YAML file or a preset name).
        images: the training images' folder.
        masks: the training masks' folder.
        out: the run's folder (checkpoints, logs, the plot).
        instances: instance labels for the weight map (default: connected components of the masks).
        val_images: the validation images' folder.
        val_masks: the validation masks' folder.
        val_fraction: the share of the training pairs held out for validation instead.
        epochs: passes over the training images.
        batch_size: patches per step (per process under torchrun).
        memory: the memory one training step may take (per process): the batch is then the largest that fits it
            with the measured overhead, or the one given, checked against it.
        patch_size: the input patch's size per axis (one value: every axis); default the largest that fits.
        lr: the learning rate.
        seed: makes the run reproducible: weights, data order, augmentation, dropout.
        device: ``cpu`` or ``cuda``.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast; fp16 with loss scaling).
        recipe: ``paper`` or ``modern``.
        optimizer: ``sgd`` (momentum 0.99), ``adam`` or ``sgd-poly``.
        loss: ``ce``, ``weighted-ce`` or ``ce-dice``.
        augment: ``paper`` or ``none``.
        normalization: ``zscore``, ``percentile`` or ``none``.
        w0: the weight map's border weight (the paper: 10).
        sigma: the weight map's border width in pixels (the paper: 5).
        patches_per_image: patches drawn from each training image per epoch.
        resume: continue the run in ``out`` from its ``last.pt``, with its own settings.
    """

    spec: str
    images: str
    masks: str
    out: str
    instances: str | None = None
    val_images: str | None = None
    val_masks: str | None = None
    val_fraction: float = 0.0
    epochs: int = 50
    batch_size: int | None = None
    memory: int | str | None = None
    patch_size: tuple[int, ...] | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    recipe: str = "paper"
    optimizer: str | None = None
    loss: str | None = None
    augment: str = "paper"
    normalization: str = "zscore"
    w0: float = 10.0
    sigma: float = 5.0
    patches_per_image: int = 1
    resume: bool = False

    def resolved(self) -> TrainConfig:
        """The settings with the recipe's defaults filled in, each value checked on its own.

        Raises:
            UNetGenError: naming the option, the value and what it takes.
        """
        _choice("--recipe", self.recipe, RECIPES)
        defaults = RECIPE_DEFAULTS[self.recipe]
        optimizer = self.optimizer or defaults["optimizer"]
        loss = self.loss or defaults["loss"]
        _choice("--optimizer", optimizer, OPTIMIZERS)
        _choice("--loss", loss, LOSSES)
        _choice("--augment", self.augment, AUGMENTATIONS)
        _choice("--normalization", self.normalization, METHODS)
        _choice("--device", self.device, DEVICES)
        _choice("--precision", self.precision, PRECISIONS)
        batch = self.batch_size if self.batch_size is not None or self.memory is not None else defaults["batch_size"]
        lr = self.lr if self.lr is not None else LEARNING_RATES[optimizer]
        if (self.val_images is None) != (self.val_masks is None):
            given, missing = ("--val-images", "--val-masks") if self.val_masks is None else ("--val-masks",
                                                                                               "--val-images")
            raise UNetGenError(f"{given}: give {missing} too (validation pairs come from two folders)")
        if self.val_images is not None and self.val_fraction:
            raise UNetGenError("--val-fraction: give either validation folders or a fraction to hold out, not both")
        _number("--epochs", self.epochs, 1)
        if batch is not None:
            _number("--batch-size", batch, 1)
        _number("--patches-per-image", self.patches_per_image, 1)
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise UNetGenError(f"--lr {lr}: give a learning rate above 0, e.g. {LEARNING_RATES[optimizer]:g}")
        if not 0 <= self.val_fraction < 1:
            raise UNetGenError(f"--val-fraction {self.val_fraction:g}: give a share from 0 to below 1, e.g. 0.2")
        if not (self.w0 >= 0 and self.sigma > 0):
            raise UNetGenError(
                f"--w0 {self.w0:g} --sigma {self.sigma:g}: give w0 ≥ 0 and sigma > 0 (the paper: 10 and 5)"
            )
        if self.patch_size is not None:
            for size in self.patch_size:
                _number("--patch-size", size, 1)
        memory = None if self.memory is None else _memory(self.memory)
        return dataclasses.replace(self, optimizer=optimizer, loss=loss, batch_size=batch, lr=float(lr),
                                   memory=memory)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (stored in the run's checkpoints and log)."""
        data = dataclasses.asdict(self)
        data["patch_size"] = list(self.patch_size) if self.patch_size is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Read :meth:`to_dict`'s form back (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in names}
        if values.get("patch_size") is not None:
            values["patch_size"] = tuple(int(n) for n in values["patch_size"])
        return cls(**values)


#: Options that may differ when a run is resumed (the rest must be the run's own): more epochs, another device.
RESUMABLE = ("epochs", "device", "out", "resume")
#: Options that name files or folders: compared as absolute paths when a run is resumed.
PATHS = ("images", "masks", "instances", "val_images", "val_masks")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse a value that is not one of ``choices``, with the closest one."""
    if value not in choices:
        raise UNetGenError(f"{flag} {value}: give one of {', '.join(choices)}{did_you_mean(value, choices)}")


def _number(flag: str, value: Any, least: int) -> None:
    """Refuse a value that is not a whole number from ``least`` up."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UNetGenError(f"{flag} {value}: give a whole number from {least} up")


def run_paths(out: str | Path) -> dict[str, Path]:
    """The files of a run's folder: ``last.pt``, ``best.pt``, ``log.csv``, ``log.json``, ``curves.svg``."""
    folder = Path(out)
    return {"last": folder / "last.pt", "best": folder / "best.pt", "csv": folder / "log.csv",
            "json": folder / "log.json", "plot": folder / "curves.svg"}



def _memory(value: int | str) -> int:
    """``--memory``: a size in bytes, or text such as ``4GiB``; above 0."""
    try:
        budget = value if isinstance(value, int) and not isinstance(value, bool) else parse_bytes(str(value))
    except ResourceError:
        budget = -1
    if budget <= 0:
        raise UNetGenError(f"--memory {value}: give the memory one training step may take, e.g. 4GiB or 512MiB")
    return budget

__all__ = ["TrainConfig", "RECIPES", "RECIPE_DEFAULTS", "OPTIMIZERS", "LEARNING_RATES", "AUGMENTATIONS", "DEVICES",
           "PRECISIONS", "RESUMABLE", "PATHS", "run_paths"]
