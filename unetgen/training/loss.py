"""The training losses: cross-entropy, the paper's weighted cross-entropy, and cross-entropy + Dice; summed over the
deep-supervision heads with nnU-Net's weights where the network has them.

* ``ce``: cross-entropy over the classes, the mean over the output's pixels;
* ``weighted-ce``: the paper's energy (Ronneberger et al. 2015, sec. 3, eq. 1), each pixel's cross-entropy times the
  weight map ``w(x)`` (:mod:`unetgen.training.weight_map`), averaged over the pixels as Caffe normalises;
* ``ce-dice``: cross-entropy plus ``1 −`` the soft Dice of the foreground classes (per sample, smoothed by 10⁻⁵, the
  mean over classes and samples), nnU-Net's default loss.

A network with one output channel is a binary one: its cross-entropy is the binary one (``sigmoid``), its Dice that
of class 1. A network that ends in a softmax or sigmoid (``final_activation``) returns probabilities, whose logarithm
(clamped at 10⁻¹²) stands in for the log-softmax. Deep supervision: :func:`unetgen.network.losses.deep_supervision_loss`
samples the target (and weight map) under each head's pixels and adds the heads' losses with nnU-Net's weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..network.losses import deep_supervision_loss
from ..planning.field import HeadGrid

#: The losses, in the order the CLI lists them.
LOSSES = ("ce", "weighted-ce", "ce-dice")
#: The Dice's smoothing (nnU-Net's).
_SMOOTH = 1e-5
#: Probabilities are clamped here before their logarithm.
_TINY = 1e-12


class Objective:
    """One loss over a network's outputs: ``objective(outputs, labels, weights) → scalar``.

    Attributes:
        name: one of :data:`LOSSES`.
        final: the network's final activation (``none``, ``sigmoid``, ``softmax``).
        grids: where each deep-supervision head's pixels lie over the main output, or None for one output.
    """

    def __init__(self, name: str, final: str, grids: Sequence[Sequence[HeadGrid]] | None = None) -> None:
        """Args:
        name: one of :data:`LOSSES`.
        final: the network's final activation.
        grids: :func:`unetgen.planning.field.head_grids` of the plan at the patch size, for a network with heads.
        """
        if name not in LOSSES:
            raise ValueError(f"loss {name!r}: one of {LOSSES}")
        self.name = name
        self.final = final
        self.grids = grids

    @property
    def weighted(self) -> bool:
        """Whether the loss reads the weight map."""
        return self.name == "weighted-ce"

    def __call__(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss.

        Args:
            outputs: the main output ``(batch, channels, *out)``, or the list of every head's (deep supervision).
            labels: the class of each output pixel, ``(batch, *out)``, integers.
            weights: the weight map under the output, ``(batch, *out)``, for ``weighted-ce``.

        Returns:
            A scalar tensor (float32).
        """
        target = labels.to(torch.float32).unsqueeze(1)
        if self.weighted:
            if weights is None:
                raise ValueError("weighted-ce needs the weight map")
            target = torch.cat([target, weights.to(torch.float32).unsqueeze(1)], dim=1)
        if isinstance(outputs, torch.Tensor):
            return self._one(outputs, target)
        return deep_supervision_loss(list(outputs), target, self._one, grids=self.grids)

    def _one(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of one output against its target (labels, and the weight map as a second channel)."""
        output = output.float()
        labels = target[:, 0].round().long()
        binary = output.shape[1] == 1
        if binary:
            ce = self._binary_ce(output[:, 0], labels.float())
        else:
            ce = F.nll_loss(self._log_probabilities(output), labels, reduction="none")
        if self.weighted:
            return (ce * target[:, 1]).mean()
        loss = ce.mean()
        if self.name == "ce-dice":
            loss = loss + 1.0 - self._dice(output, labels, binary)
        return loss

    def _log_probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the classes from logits, or from a final softmax or sigmoid's output."""
        if self.final == "softmax":
            return torch.log(output.clamp_min(_TINY))
        if self.final == "sigmoid":  # one sigmoid per class: normalise to a distribution first
            return torch.log(output.clamp_min(_TINY) / output.clamp_min(_TINY).sum(dim=1, keepdim=True))
        return F.log_softmax(output, dim=1)

    def _binary_ce(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel binary cross-entropy of a one-channel output (logits, or probabilities)."""
        if self.final in ("sigmoid", "softmax"):  # a one-channel softmax is always 1: treat it as a probability
            return F.binary_cross_entropy(output.clamp(_TINY, 1 - 1e-7), target, reduction="none")
        return F.binary_cross_entropy_with_logits(output, target, reduction="none")

    def _dice(self, output: torch.Tensor, labels: torch.Tensor, binary: bool) -> torch.Tensor:
        """The mean soft Dice of the foreground classes, per sample."""
        axes = tuple(range(2, output.dim()))
        if binary:
            probabilities = output if self.final != "none" else torch.sigmoid(output)
            truth = (labels == 1).unsqueeze(1).float()
        else:
            probabilities = self._log_probabilities(output).exp()[:, 1:]
            truth = F.one_hot(labels, output.shape[1]).movedim(-1, 1)[:, 1:].float()
        overlap = (probabilities * truth).sum(dim=axes)
        total = probabilities.sum(dim=axes) + truth.sum(dim=axes)
        return ((2 * overlap + _SMOOTH) / (total + _SMOOTH)).mean()


__all__ = ["LOSSES", "Objective"]
