"""The optimizers a run can use, and the learning rate of each epoch.

* ``sgd``: the paper's (Ronneberger et al. 2015, sec. 3): SGD with momentum 0.99, a constant learning rate;
* ``adam``: Adam, a constant learning rate;
* ``sgd-poly``: nnU-Net's: SGD with Nesterov momentum 0.99 and weight decay 3·10⁻⁵, gradients clipped to norm 12
  (:data:`CLIP_NORM`), the learning rate falling as ``lr · (1 − epoch / epochs)^0.9`` (Isensee et al. 2021).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

#: The paper's momentum (sec. 3: "we use a high momentum (0.99)").
PAPER_MOMENTUM = 0.99
#: nnU-Net's weight decay and the poly schedule's exponent.
POLY_WEIGHT_DECAY = 3e-5
POLY_EXPONENT = 0.9
#: nnU-Net's gradient clipping (``clip_grad_norm_(..., 12)``), for ``sgd-poly``.
CLIP_NORM = 12.0


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """The optimizer ``name`` (``sgd``, ``adam`` or ``sgd-poly``) over ``parameters`` at learning rate ``lr``."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=PAPER_MOMENTUM)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    if name == "sgd-poly":
        return torch.optim.SGD(parameters, lr=lr, momentum=PAPER_MOMENTUM, nesterov=True,
                               weight_decay=POLY_WEIGHT_DECAY)
    raise ValueError(f"optimizer {name!r}")


def clip_norm(name: str) -> float | None:
    """The norm gradients are clipped to before a step of optimizer ``name``, or None."""
    return CLIP_NORM if name == "sgd-poly" else None


def learning_rate(name: str, lr: float, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (counted from 0): ``lr``, or for ``sgd-poly`` the poly schedule's."""
    if name == "sgd-poly":
        return lr * (1 - epoch / epochs) ** POLY_EXPONENT
    return lr


__all__ = ["PAPER_MOMENTUM", "CLIP_NORM", "make_optimizer", "clip_norm", "learning_rate"]
