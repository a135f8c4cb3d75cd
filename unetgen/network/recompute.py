"""Activation checkpointing: run chosen levels of a built U-Net under ``torch.utils.checkpoint``, so that a
training step keeps only their inputs and recomputes the rest in the backward pass.

A level is an encoder level (its pooling or strided convolution and its block; the bottleneck for the last level)
together with its decoder level's convolution block. The modules keep their names, so state-dict keys, checkpoints
and ONNX export are unaffected; only the training step's memory and time change. :func:`unetgen.estimate` with
``checkpoint=`` replays the same (:mod:`unetgen.planning.training`), and ``benchmarks/checkpointing.py`` measures
what it saves and costs.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..planning.training import checkpoint_levels as planned_levels

__all__ = ["checkpoint_levels", "checkpointed_levels"]


def _checkpointed(module: nn.Module) -> None:
    """Make ``module``'s calls run under non-reentrant ``torch.utils.checkpoint`` (its forward, per instance)."""
    forward = type(module).forward

    def run(self: nn.Module, *args: Any) -> Any:
        if not torch.is_grad_enabled():  # inference: nothing to save, nothing to recompute
            return forward(self, *args)
        return checkpoint(forward, self, *args, use_reentrant=False)

    module.forward = types.MethodType(run, module)  # type: ignore[method-assign]
    module._unetgen_checkpointed = True  # type: ignore[assignment]


def checkpoint_levels(model: nn.Module, levels: str | Sequence[int] = "levels") -> nn.Module:
    """Run ``levels`` of ``model`` under activation checkpointing, in place.

    Args:
        model: a network from :func:`unetgen.build`.
        levels: ``"levels"`` (every level), or level numbers (0 is the top; ``depth − 1`` the bottleneck).

    Returns:
        ``model`` itself.

    Raises:
        UNetGenError: for a level the network does not have (see
            :func:`unetgen.planning.training.checkpoint_levels`).
    """
    plan = model.plan  # type: ignore[attr-defined]
    for level in planned_levels(plan, levels):
        if level == plan.depth - 1:
            _checkpointed(model.bottleneck)  # type: ignore[arg-type]
            continue
        _checkpointed(model.encoder[level])  # type: ignore[index]
        _checkpointed(model.decoder[str(level)].convs)  # type: ignore[index]
    return model


def checkpointed_levels(model: nn.Module) -> tuple[int, ...]:
    """The levels of ``model`` that run under activation checkpointing."""
    plan = model.plan  # type: ignore[attr-defined]
    found = []
    for level in range(plan.depth):
        module = model.bottleneck if level == plan.depth - 1 else model.encoder[level]  # type: ignore[index]
        if getattr(module, "_unetgen_checkpointed", False):
            found.append(level)
    return tuple(found)

