"""Deep-supervision loss: one loss over every output of a network with auxiliary heads, weighted as nnU-Net weights.

A network with ``deep_supervision: k`` returns, in training mode, ``[main, level 1 head, …, level k head]``, highest
resolution first. :func:`deep_supervision_loss` samples the target under each head's pixels and adds up the losses
with nnU-Net's weights (:func:`deep_supervision_weights`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import SizeError
from ..planning.field import HeadGrid

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def deep_supervision_weights(count: int) -> list[float]:
    """nnU-Net's weights of ``count`` outputs, highest resolution first: ``1/2^i``, the last (lowest resolution)
    weighted 0, normalised to sum to 1 (one output: ``[1.0]``).

    nnunetv2 2.8.1, ``nnUNetTrainer._build_loss``::

        weights = np.array([1 / (2 ** i) for i in range(len(deep_supervision_scales))])
        if self.is_ddp and not self._do_i_compile():
            ...
            weights[-1] = 1e-6
        else:
            weights[-1] = 0

        # we don't use the lowest 2 outputs. Normalize weights so that they sum to 1
        weights = weights / weights.sum()
        # now wrap the loss
        loss = DeepSupervisionWrapper(loss, weights)

    nnU-Net has one output per decoder stage (``deep_supervision: depth − 2`` here); with fewer heads the same rule
    is applied to the outputs there are. (nnunetv2 2.0 and 2.1 weighted the last output too; DDP without
    ``torch.compile`` gives it 1e-6, so that every parameter gets a gradient.)

    Args:
        count: the number of outputs (the main one included).

    Returns:
        One weight per output; for 5 outputs ``[8/15, 4/15, 2/15, 1/15, 0]``.
    """
    if count < 1:
        raise ValueError(f"count: {count}; a network has at least one output")
    if count == 1:
        return [1.0]
    weights = [1 / 2**index for index in range(count)]
    weights[-1] = 0.0
    total = sum(weights)
    return [weight / total for weight in weights]


def _as_list(outputs: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def head_targets(
    outputs: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    grids: Sequence[Sequence[HeadGrid]] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each output with the target under its pixels.

    Without ``grids`` (networks with ``padding: same``, whose outputs tile the input exactly) the target is
    down-sampled to each output's size as nnU-Net does (batchgeneratorsv2 ``DownsampleSegForDSTransform``:
    ``interpolate(mode='nearest-exact')``, which takes pixel ``i·J + J/2`` for a factor ``J``). With ``grids``
    (:func:`unetgen.planning.field.head_grids` of the plan at the batch's input size; needed for ``padding: valid``)
    the target pixel under each output pixel's centre is taken, and the output pixels whose centre lies outside the
    main output are left out; for ``same`` networks this is the same down-sampling.

    Args:
        outputs: the network's outputs, highest resolution first (a tensor alone: the main output).
        target: the main output's target, ``(batch, channels, *spatial)`` (a label map or one channel per class or
            region) or ``(batch, *spatial)``, the size of the main output.
        grids: per output, one :class:`~unetgen.planning.field.HeadGrid` per axis.

    Returns:
        ``(outputs, targets)``: the outputs (cropped where ``grids`` says) and their targets, in the target's dtype
        and layout.

    Raises:
        SizeError: when the target does not have the main output's size, or ``grids`` does not fit the outputs.
    """
    outputs = _as_list(outputs)
    main = outputs[0]
    dims = main.dim() - 2
    squeeze = target.dim() == main.dim() - 1
    labels = target.unsqueeze(1) if squeeze else target
    if labels.dim() != main.dim() or labels.shape[0] != main.shape[0] or labels.shape[2:] != main.shape[2:]:
        raise SizeError(
            f"target has shape {tuple(target.shape)}; the main output is {tuple(main.shape)}: give a target of "
            f"(batch, *spatial) or (batch, channels, *spatial) at the main output's size"
        )
    if grids is not None and len(grids) != len(outputs):
        raise SizeError(f"grids: {len(grids)} entries for {len(outputs)} outputs; give head_grids(plan) of this plan")
    kept, targets = [], []
    for index, output in enumerate(outputs):
        if grids is None:
            if output.shape[2:] == labels.shape[2:]:
                picked = labels
            elif any(n % m for n, m in zip(labels.shape[2:], output.shape[2:])):
                raise SizeError(
                    f"output {index} {tuple(output.shape)} does not tile the main output {tuple(main.shape)}: give "
                    "grids=head_grids(plan) (networks with padding: valid)"
                )
            else:
                picked = F.interpolate(labels.float(), size=tuple(output.shape[2:]), mode="nearest-exact")
                picked = picked.to(labels.dtype)
        else:
            picked = labels
            for axis, grid in enumerate(grids[index]):
                if len(grids[index]) != dims or grid.first + grid.count > output.shape[2 + axis]:
                    raise SizeError(f"grids: entry {index} does not fit output {index} {tuple(output.shape)}; give "
                                    "head_grids of the plan at this input size")
                start = grid.offset + grid.first * grid.step
                where = [slice(None)] * picked.dim()
                where[2 + axis] = slice(start, start + (grid.count - 1) * grid.step + 1, grid.step)
                picked = picked[tuple(where)]
                output = output.narrow(2 + axis, grid.first, grid.count)
        kept.append(output)
        targets.append(picked.squeeze(1) if squeeze else picked)
    return kept, targets


def deep_supervision_loss(
    outputs: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor | Sequence[torch.Tensor],
    loss_fn: Loss,
    *,
    weights: Sequence[float] | None = None,
    grids: Sequence[Sequence[HeadGrid]] | None = None,
) -> torch.Tensor:
    """The weighted sum of ``loss_fn`` over a network's outputs and their targets, as nnU-Net's
    ``DeepSupervisionWrapper`` adds them (outputs weighted 0 are not computed).

    Args:
        outputs: what the network returns in training mode: ``[main, level 1 head, …]`` (a tensor alone: one output).
        target: the main output's target (sampled under each head by :func:`head_targets`), or a list with one
            target per output, already sampled (what nnU-Net's data loader gives).
        loss_fn: ``loss_fn(output, target)`` → a scalar tensor (cross-entropy, Dice, …).
        weights: one per output; default :func:`deep_supervision_weights`.
        grids: where each output's pixels lie (:func:`~unetgen.planning.field.head_grids`); needed for networks
            with ``padding: valid``.

    Returns:
        The loss, a scalar tensor.

    Raises:
        SizeError: when the targets or weights do not fit the outputs.
    """
    outputs = _as_list(outputs)
    if isinstance(target, torch.Tensor):
        outputs, targets = head_targets(outputs, target, grids)
    else:
        targets = list(target)
        if len(targets) != len(outputs):
            raise SizeError(f"{len(targets)} targets for {len(outputs)} outputs; give one per output, or the main "
                            "output's target alone")
    weights = deep_supervision_weights(len(outputs)) if weights is None else list(weights)
    if len(weights) != len(outputs) or not any(weights):
        raise SizeError(f"weights: {len(weights)} for {len(outputs)} outputs; give one per output, not all 0")
    # Summed as nnU-Net sums (Python's sum, in order), so that the two agree to the last bit.
    return sum(weight * loss_fn(output, aim) for weight, output, aim in zip(weights, outputs, targets) if weight != 0)


__all__ = ["deep_supervision_weights", "head_targets", "deep_supervision_loss"]
