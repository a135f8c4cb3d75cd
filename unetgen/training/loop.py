"""The training loop of ``unetgen train``: check everything, then train epoch by epoch, validate with ``predict``,
and keep the run's files (checkpoints, log, plot) — resumable exactly, interruptible cleanly, on one process or many.

Reproducibility: every random choice comes from the run's seed and where it is made — the data order of an epoch
from ``(seed, epoch)``, a patch's position and augmentation from ``(seed, epoch, position in the order)``, dropout from
``(seed, epoch, step, process)`` — so a run stopped after any step and resumed (``--resume``) computes what the
uninterrupted run computes, bit for bit on the CPU: the checkpoint ``last.pt`` holds the weights, the optimizer's
state, the step reached and the log so far.

Ctrl-C (SIGINT) finishes the step under way, saves ``last.pt`` and returns; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

try:  # the peak resident memory in the log; Unix only
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

from ..hardware import return_freed_memory
from ..errors import CheckpointError, UNetGenError
from ..inference.predict import predict
from ..network.checkpoint import load_weights, save
from ..network.unet import build
from ..planning.field import head_grids
from ..planning.plan import Plan
from ..spec.fields import UNetSpec, load_spec
from ..text import human_bytes, size_text
from .augment import PAPER
from .checks import batch_for_memory, check_batch_norm, check_device, check_memory, patch_plan, patch_shape
from .config import PATHS, RESUMABLE, TrainConfig, run_paths
from .data import Sample, load_samples, match_pairs, split
from .distributed import World, anyone, join, leave, total, wait
from .intensity import Intensity, fit_intensity
from .loss import Objective
from .metrics import Overlap, foreground_mean
from .optimizers import clip_norm, learning_rate, make_optimizer
from .records import write_curves, write_log
from .sampling import PatchShape, draw_patch
from .weight_map import weight_map

log = logging.getLogger(__name__)

#: The entry of ``last.pt`` that holds the state to resume from.
STATE_KEY = "training"


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        out: the run's folder.
        epochs: the epochs completed.
        interrupted: whether it stopped early (Ctrl-C); ``last.pt`` then holds the step reached.
        best_epoch: the epoch of ``best.pt``, or None.
        best_score: its score (validation Dice, mean of the foreground classes; without validation, minus the
            training loss).
        rows: the per-epoch log.
        last: ``last.pt``.
        best: ``best.pt``, or None before the first epoch ends.
        step: the step of the epoch reached when interrupted.
        main: whether this process wrote the files (the first of a distributed run).
    """

    out: Path
    epochs: int
    interrupted: bool
    best_epoch: int | None
    best_score: float | None
    rows: list[dict[str, Any]]
    last: Path
    best: Path | None
    step: int = 0
    main: bool = True


@dataclass
class Setup:
    """A run, checked and ready: the settings, the network's plan at the patch size, the data.

    Attributes:
        config: the settings, the recipe's defaults filled in.
        spec: the network.
        plan: the core's plan at the patch size.
        shape: the patch's sizes.
        train: the training samples (normalised, weight maps computed when the loss uses them).
        val: the validation samples (as read: ``predict`` normalises them as it will after training).
        intensity: the normalisation.
        state: the state to resume from (``last.pt``'s), or None.
        estimate: the memory estimate of one training step (bytes).
    """

    config: TrainConfig
    spec: UNetSpec
    plan: Plan
    shape: PatchShape
    train: list[Sample]
    val: list[Sample]
    intensity: Intensity
    state: dict[str, Any] | None = None
    estimate: int = 0
    world: World = field(default_factory=World)

    def describe(self) -> list[str]:
        """The run in words, before it starts: the data, the network's patches, the recipe."""
        c = self.config
        held = ""
        if self.val:
            held = f", {len(self.val)} for validation" + (
                f" (--val-fraction {c.val_fraction:g})" if c.val_images is None else f" from {c.val_images}"
            )
        sizes = sorted({s.size for s in self.train})
        shown = size_text(sizes[0]) + (f" to {size_text(sizes[-1])}" if len(sizes) > 1 else "")
        processes = f" × {self.world.size} processes" if self.world.distributed else ""
        optimizer = {"sgd": "SGD momentum 0.99", "adam": "Adam", "sgd-poly": "SGD-poly (Nesterov 0.99)"}[
            str(c.optimizer)]
        loss = {"ce": "cross-entropy", "ce-dice": "cross-entropy + Dice",
                "weighted-ce": f"weighted cross-entropy (weight map w0 {c.w0:g}, σ {c.sigma:g} px)"}[str(c.loss)]
        heads = len(self.plan.heads)
        if heads > 1:
            loss += f", deep supervision over {heads} outputs"
        augment = "elastic deformations, shifts, rotations, grey values" if c.augment == "paper" else "none"
        lines = [
            f"data: {len(self.train)} training images ({shown}){held}",
            f"network {self.spec.name}: patches {size_text(self.shape.window)} → {size_text(self.shape.out)}, batch "
            f"{c.batch_size}{processes}; one step about {human_bytes(self.estimate)}",
            f"recipe {c.recipe}: {optimizer}, lr {c.lr:g}; {loss}; augmentation: {augment}; intensities: "
            f"{self.intensity.describe()}; {c.epochs} epoch{'s' if c.epochs != 1 else ''} on {c.device} "
            f"({c.precision})",
        ]
        if self.state is not None:
            lines.append(f"resuming {run_paths(c.out)['last']}: epoch {int(self.state['epoch']) + 1}, step "
                         f"{int(self.state['step']) + 1}")
        return lines


def prepare(config: TrainConfig, world: World | None = None) -> Setup:
    """Check a run before any training: options, the run's folder, the data against the network, the patch size,
    the batch (batch norm, memory); read the data and compute what training needs (normalisation, weight maps).

    Args:
        config: the settings (:class:`~unetgen.training.config.TrainConfig`).
        world: this process's place in a distributed run (default: alone).

    Returns:
        The :class:`Setup`.

    Raises:
        UNetGenError: for any problem, one line each, before anything is trained.
    """
    world = world or World()
    config.resolved()  # each option checked as given, before the run's folder is read
    config, state = _resume(config)
    config = config.resolved()
    check_device(config.device)
    spec = load_spec(config.spec)
    if state is not None and state.get("spec") != json.dumps(spec.model_dump(mode="json")):
        raise UNetGenError(f"{config.spec}: describes another network than the one the run in {config.out} trains; "
                           "resume with the run's spec, or start a new run in another folder")
    pairs = match_pairs(config.images, config.masks, config.instances)
    if config.val_images is not None and config.val_masks is not None:
        train_pairs, val_pairs = pairs, match_pairs(config.val_images, config.val_masks, flag="--val-")
    else:
        train_pairs, val_pairs = split(pairs, config.val_fraction, config.seed)
    train = load_samples(train_pairs, spec)
    val = load_samples(val_pairs, spec)
    plan = patch_plan(spec, [s.size for s in train], config.patch_size)
    if config.memory is not None:
        per_epoch = -(-len(train) * config.patches_per_image // world.size)  # patches one process sees per epoch
        batch = batch_for_memory(plan, config.memory, config.batch_size, config.device, str(config.optimizer),
                                 config.precision, most=per_epoch)
        config = dataclasses.replace(config, batch_size=batch)
    batch = int(config.batch_size or 1)
    check_batch_norm(plan, batch)
    estimate = check_memory(plan, batch, config.device, str(config.optimizer), config.precision)
    intensity = fit_intensity(config.normalization, [s.pixels for s in train], [s.labels for s in train])
    for sample in train:
        sample.pixels = intensity.apply(sample.pixels)
        if config.loss == "weighted-ce":
            sample.weights = weight_map(sample.labels, sample.instances, w0=config.w0, sigma=config.sigma)
    return Setup(config, spec, plan, patch_shape(plan), train, val, intensity, state, estimate, world)


def _absolute(config: TrainConfig) -> TrainConfig:
    """The settings with folders as absolute paths (a run resumed from another folder finds its data)."""
    changes = {name: str(Path(getattr(config, name)).resolve()) for name in PATHS if getattr(config, name) is not None}
    spec = Path(config.spec)
    if spec.is_file():
        changes["spec"] = str(spec.resolve())
    return dataclasses.replace(config, **changes)


def _resume(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's folder checked; with ``resume``, the state in its ``last.pt`` and the run's own settings (options
    given that differ from the run's are refused, except :data:`~unetgen.training.config.RESUMABLE` ones)."""
    out = Path(config.out)
    last = run_paths(out)["last"]
    if out.exists() and not out.is_dir():
        raise UNetGenError(f"--out {out}: is a file; give a folder for the run")
    if not out.parent.is_dir():
        raise UNetGenError(f"--out {out}: folder {out.parent} does not exist; create it first")
    if not config.resume:
        if last.exists():
            raise UNetGenError(f"--out {out}: holds a run already ({last.name}); continue it with --resume, or give "
                               "another folder")
        return config, None
    state = read_state(last)
    try:
        saved = TrainConfig.from_dict(json.loads(state["config"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{last}: its training state is damaged ({type(exc).__name__}); start a new run"
        ) from None
    merged: dict[str, Any] = {}
    absolute = _absolute(config)
    for option in dataclasses.fields(TrainConfig):
        given, stored = getattr(config, option.name), getattr(saved, option.name)
        default = option.default
        if option.name in RESUMABLE or option.name == "spec":
            merged[option.name] = stored if option.name == "epochs" and given == default else given
        elif option.name in PATHS and getattr(absolute, option.name) == stored:
            merged[option.name] = given  # the folder the run was started with, as this command names it
        elif given == stored or (default is not dataclasses.MISSING and given == default):
            merged[option.name] = stored
        else:
            flag = "--" + option.name.replace("_", "-")
            shown = " ".join(map(str, given)) if isinstance(given, tuple) else given
            raise UNetGenError(
                f"{flag} {shown}: the run in {out} was started with {stored}; a resumed run keeps its settings "
                "(leave the option out, or start a new run in another folder)"
            )
    return TrainConfig(**merged), state


def read_state(path: Path) -> dict[str, Any]:
    """The state to resume from, stored in a run's ``last.pt``.

    Raises:
        CheckpointError: when the file is missing, unreadable or holds no training state.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; --resume continues a run whose folder (--out) has one")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}); start a new run") from None
    state = payload.get(STATE_KEY) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no training state to resume from")
    return state


def train(
    config: TrainConfig,
    *,
    progress: bool = False,
    report: Callable[[dict[str, Any]], None] | None = None,
    after_step: Callable[[int, int], None] | None = None,
    announce: Callable[[Setup], None] | None = None,
) -> TrainResult:
    """Train a network as ``unetgen train`` does: check everything, then train and keep the run's files.

    Under ``torchrun`` each process trains on its share of every step's patches (DistributedDataParallel: gloo on
    CPUs, nccl on GPUs) and the first process writes the files. The caller's random state is left as it was. On the
    CPU it makes glibc return freed blocks of 1 MiB or more at once, for the rest of the process
    (:func:`unetgen.hardware.return_freed_memory`): what the memory budgets assume.

    Args:
        config: the settings.
        progress: show a progress bar (tqdm) on standard error when it is a terminal.
        report: called with each epoch's log row when the epoch ends (on the first process).
        after_step: called with ``(epoch, step)`` (from 0) after each step.
        announce: called with the :class:`Setup` once everything is checked, before training (first process).

    Returns:
        What the run did.

    Raises:
        UNetGenError: for any problem with the settings or the data (before training), or a loss that diverges.
    """
    world = join(config.device)
    if config.device == "cpu":
        return_freed_memory()  # resident memory = live tensors + oneDNN's share: the planner's CPU budget
    try:
        setup = prepare(config, world)
        if announce is not None and world.main:
            announce(setup)
        devices = [world.local_rank] if setup.config.device == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return _Trainer(setup, progress, report, after_step).run()
    finally:
        leave(world)


def _seed(*numbers: int) -> int:
    """A seed for ``torch.manual_seed`` (63 bits) from several numbers."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class _Trainer:
    """One run's training state and its loop."""

    def __init__(
        self, setup: Setup, progress: bool, report: Callable[[dict[str, Any]], None] | None,
        after_step: Callable[[int, int], None] | None,
    ) -> None:
        self.setup = setup
        self.config = config = setup.config
        self.world = setup.world
        self.progress = progress and self.world.main
        self.report = report
        self.after_step = after_step
        self.paths = run_paths(config.out)
        self.device = torch.device("cuda", self.world.local_rank) if config.device == "cuda" else torch.device("cpu")
        state = setup.state
        if state is not None:
            self.model = load_weights(self.paths["last"])
        else:
            self.model = build(setup.spec, seed=config.seed)
        self.model.intensity = setup.intensity.to_dict()
        self.model.to(self.device)
        module: nn.Module = self.model.core() if self.model.same_output else self.model
        if self.world.distributed:
            ids = [self.world.local_rank] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.net = module
        self.optimizer = make_optimizer(str(config.optimizer), self.model.parameters(), float(config.lr or 0))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        grids = head_grids(setup.plan) if len(setup.plan.heads) > 1 else None
        self.objective = Objective(str(config.loss), setup.plan.final_activation, grids)
        self.augmentation = PAPER if config.augment == "paper" else None
        self.epoch, self.step = 0, 0
        self.loss_sum, self.loss_count, self.seconds = 0.0, 0, 0.0
        self.rows: list[dict[str, Any]] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.stop = False
        if state is not None:
            self._restore(state)

    # --- state ---------------------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """What ``last.pt`` keeps to resume from."""
        return {
            "config": json.dumps(_absolute(self.config).to_dict()),
            "spec": json.dumps(self.setup.spec.model_dump(mode="json")),
            "epoch": self.epoch, "step": self.step, "world": self.world.size,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "loss_sum": self.loss_sum, "loss_count": self.loss_count, "seconds": self.seconds,
            "rows": json.dumps(self.rows), "best_score": self.best_score, "best_epoch": self.best_epoch,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        """Take up a run where ``last.pt``'s state left it."""
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.loss_sum, self.loss_count = float(state["loss_sum"]), int(state["loss_count"])
            self.seconds = float(state.get("seconds", 0.0))
            self.rows = json.loads(state["rows"])
            self.best_score, self.best_epoch = state.get("best_score"), state.get("best_epoch")
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.paths['last']}: its training state is damaged ({type(exc).__name__}: {exc})"
                                  "; start a new run") from None
        if int(state.get("world", 1)) != self.world.size:
            log.warning("%s: the run used %s process(es), this one %d: the data order differs from the run's",
                        self.paths["last"], state.get("world"), self.world.size)

    def _save_last(self) -> None:
        """Write ``last.pt`` with the state to resume from (first process)."""
        if self.world.main:
            save(self.model, self.paths["last"], extra={STATE_KEY: self._state()})

    # --- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train the epochs left; stop early (saved) when interrupted."""
        config = self.config
        if self.world.main:
            Path(config.out).mkdir(exist_ok=True)
        with self._interruptible():
            while self.epoch < config.epochs:
                if not self._train_epoch():
                    self._save_last()
                    wait(self.world)
                    return self._result(interrupted=True)
                self._end_epoch()
        return self._result(interrupted=False)

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch's order of training images (each ``patches_per_image`` times), from ``(seed, epoch)``."""
        count = len(self.setup.train)
        rng = np.random.default_rng([self.config.seed, epoch])
        return rng.permutation(count * self.config.patches_per_image) % count

    def _train_epoch(self) -> bool:
        """Train the rest of the current epoch; False when interrupted (after a whole step)."""
        config, world = self.config, self.world
        order = self._order(self.epoch)
        per_step = int(config.batch_size or 1) * world.size
        steps = -(-len(order) // per_step)
        lr = learning_rate(str(config.optimizer), float(config.lr or 0), self.epoch, config.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        bar = tqdm(total=steps, initial=self.step, desc=f"epoch {self.epoch + 1}/{config.epochs}", unit="step",
                   file=sys.stderr, disable=None if self.progress else True, leave=False)
        try:
            while self.step < steps:
                started = time.perf_counter()
                loss = self._train_step(order, per_step)
                (summed,) = total([loss], world, self.device)
                mean = summed / world.size
                if not math.isfinite(mean):
                    raise UNetGenError(
                        f"epoch {self.epoch + 1}, step {self.step + 1}: the loss is {mean} — training diverged; "
                        f"lower --lr (now {lr:g})"
                    )
                self.loss_sum += mean
                self.loss_count += 1
                self.step += 1
                self.seconds += time.perf_counter() - started
                bar.update(1)
                if not bar.disable:
                    bar.set_postfix_str(f"loss {self.loss_sum / self.loss_count:.4f}")
                if self.after_step is not None:
                    self.after_step(self.epoch, self.step - 1)
                if anyone(self.stop, world, self.device):
                    return False
        finally:
            bar.close()
        return True

    def _train_step(self, order: np.ndarray, per_step: int) -> float:
        """One optimizer step on this process's share of the step's patches; its loss."""
        config, world = self.config, self.world
        batch = int(config.batch_size or 1)
        first = self.step * per_step + world.rank * batch
        patches = [
            draw_patch(self.setup.train[order[position % len(order)]], self.setup.shape, self.augmentation,
                       np.random.default_rng([config.seed, self.epoch, position]))
            for position in range(first, first + batch)
        ]
        x = torch.from_numpy(np.stack([p.pixels for p in patches])).to(self.device)
        labels = torch.from_numpy(np.stack([p.labels for p in patches]).astype(np.int64)).to(self.device)
        weights = None
        if self.objective.weighted:
            weights = torch.from_numpy(np.stack([p.weights for p in patches])).to(self.device)  # type: ignore[misc]
        torch.manual_seed(_seed(config.seed, self.epoch, self.step, world.rank))
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            outputs = self.net(x)
        loss = self.objective(outputs, labels, weights)
        self.scaler.scale(loss).backward()
        clip = clip_norm(str(config.optimizer))
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def _autocast(self) -> Any:
        """Autocast to bf16 or fp16 as ``--precision`` says (nothing for fp32)."""
        precision = self.config.precision
        if precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _end_epoch(self) -> None:
        """Validate, log, write the checkpoints and the plot (first process); then the next epoch."""
        config = self.config
        if self.world.main:
            started = time.perf_counter()
            row: dict[str, Any] = {"epoch": self.epoch + 1, "loss": self.loss_sum / max(self.loss_count, 1),
                                   "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self._validate())
            row["seconds"] = round(self.seconds + time.perf_counter() - started, 3)
            row["memory_mib"] = round(self._memory() / 2**20, 1)
            score = row.get("dice_mean", -row["loss"]) if self.setup.val else -row["loss"]
            improved = math.isfinite(score) and (self.best_score is None or score > self.best_score)
            if improved:
                self.best_score, self.best_epoch = float(score), self.epoch + 1
            self.rows.append(row)
        self.epoch += 1
        self.step, self.loss_sum, self.loss_count, self.seconds = 0, 0.0, 0, 0.0
        if self.world.main:
            if improved:
                save(self.model, self.paths["best"],
                     extra={"best": json.dumps({"epoch": self.best_epoch, "score": self.best_score})})
            self._save_last()
            write_log(self.rows, self.paths["csv"], self.paths["json"], self.config.to_dict())
            write_curves(self.rows, self.paths["plot"], self.setup.spec.name)
            if self.report is not None:
                self.report(row)
        wait(self.world)

    def _validate(self) -> dict[str, float]:
        """Dice and IoU per class over the validation images, predicted as ``predict`` will (whole images)."""
        if not self.setup.val:
            return {}
        classes = max(self.setup.spec.out_channels, 2)
        overlap = Overlap.empty(classes)
        for sample in self.setup.val:
            labels = predict(self.model, sample.pixels, output="labels")
            overlap.add(labels, sample.labels)
        scores: dict[str, float] = {}
        dice, iou = overlap.dice(), overlap.iou()
        for k in range(classes):
            scores[f"dice_{k}"] = dice[k]
        scores["dice_mean"] = foreground_mean(dice)
        for k in range(classes):
            scores[f"iou_{k}"] = iou[k]
        return scores

    def _memory(self) -> int:
        """The peak memory so far: the GPU's allocations, or the process's resident set."""
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return int(peak)
        if resource is None:  # not on Unix
            return 0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _result(self, interrupted: bool) -> TrainResult:
        """What the run did, so far."""
        best = self.paths["best"] if self.best_epoch is not None else None
        return TrainResult(Path(self.config.out), self.epoch, interrupted, self.best_epoch, self.best_score,
                           list(self.rows), self.paths["last"], best, self.step, self.world.main)

    @contextmanager
    def _interruptible(self) -> Iterator[None]:
        """Ctrl-C (and SIGTERM, which torchrun sends its workers) finishes the step under way, then the run saves
        and returns; a second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def stop(number: int, frame: Any) -> None:
            """The first signal: stop after the step; the next one acts as before."""
            self.stop = True
            log.warning("stopping after this step; the run is saved to %s (continue it with --resume)",
                        self.paths["last"])
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        for sig in previous:
            signal.signal(sig, stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


__all__ = ["STATE_KEY", "TrainResult", "Setup", "prepare", "read_state", "train"]
