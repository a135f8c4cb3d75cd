"""The deep-supervision loss weighs and samples as nnU-Net does: the weights against numbers worked out by hand from
nnunetv2's rule, the targets against nnU-Net's nearest-exact down-sampling, the sum against nnunetv2's own
``DeepSupervisionWrapper`` (when nnunetv2 is installed), and, for valid networks, each head's target pixel under the
head pixel's centre (found by autograd)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

import unetgen
from unetgen.errors import SizeError
from unetgen.network.losses import deep_supervision_loss, deep_supervision_weights, head_targets
from unetgen.planning.field import head_grids

#: nnunetv2: weights 1/2^i, the last 0, normalised. By hand: 6 stages → 5 outputs → (8, 4, 2, 1, 0)/15;
#: 8 stages (2D plans) → 7 outputs → (32, 16, 8, 4, 2, 1, 0)/63; 3 stages → 2 outputs → (1, 0).
BY_HAND = {
    1: [Fraction(1)],
    2: [Fraction(1), Fraction(0)],
    5: [Fraction(n, 15) for n in (8, 4, 2, 1, 0)],
    7: [Fraction(n, 63) for n in (32, 16, 8, 4, 2, 1, 0)],
}
NNUNET_LIKE = dict(depth=5, width=4, downsampling="conv", padding="same", norm="instance", conv_bias=True,
                   activation="leaky_relu", deep_supervision=3, out_channels=3)


@pytest.mark.parametrize("count", list(BY_HAND))
def test_weights_are_nnunets(count):
    assert deep_supervision_weights(count) == pytest.approx([float(w) for w in BY_HAND[count]], abs=1e-15)
    # nnunetv2 2.8.1's report of a 6-stage network: [0.5333, 0.2667, 0.1333, 0.0667, 0.0]
    if count == 5:
        assert [round(w, 4) for w in deep_supervision_weights(5)] == [0.5333, 0.2667, 0.1333, 0.0667, 0.0]


def _network_and_batch(fields=NNUNET_LIKE, size=(32, 48), seed=0):
    spec = unetgen.UNetSpec(**fields)
    model = unetgen.build(spec, seed=seed).train()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, spec.in_channels, *size, generator=generator)
    outputs = model(x)
    labels = torch.randint(0, spec.out_channels, (2, 1, *outputs[0].shape[2:]), generator=generator)
    return spec, model, outputs, labels


def _nnunet_downsampled(labels: torch.Tensor, pools: list[list[int]]) -> list[torch.Tensor]:
    """nnU-Net's targets: batchgeneratorsv2's DownsampleSegForDSTransform (per sample, scales 1/cumprod(pools)), or
    the same lines copied from it when batchgeneratorsv2 is not installed."""
    import numpy as np

    scales = list(list(i) for i in 1 / np.cumprod(np.vstack(pools), axis=0))[:-1]  # nnUNetTrainer l.383
    try:
        from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
    except ImportError:
        DownsampleSegForDSTransform = None
    per_sample = []
    for sample in labels:  # (1, *spatial), as the transform sees it
        if DownsampleSegForDSTransform is not None:
            per_sample.append(DownsampleSegForDSTransform(ds_scales=scales)(**{"segmentation": sample})["segmentation"])
            continue
        results = []
        for s in scales:
            if all(i == 1 for i in s):
                results.append(sample)
            else:
                new_shape = [round(i * j) for i, j in zip(sample.shape[1:], s)]
                results.append(F.interpolate(sample[None].float(), new_shape, mode="nearest-exact")[0].to(sample.dtype))
        per_sample.append(results)
    return [torch.stack([sample[i] for sample in per_sample]) for i in range(len(scales))]


def test_targets_are_nnunets_nearest_exact_downsampling():
    spec, model, outputs, labels = _network_and_batch()
    pools = [[1, 1]] + [[2, 2]] * (spec.depth - 1)  # nnU-Net's strides for this network
    theirs = _nnunet_downsampled(labels, pools)
    _, ours = head_targets(outputs, labels)
    _, gridded = head_targets(outputs, labels, head_grids(unetgen.make_plan(spec, (32, 48))))
    assert len(ours) == len(outputs) == spec.deep_supervision + 1
    for a, b, c, output in zip(ours, gridded, theirs, outputs):
        assert a.shape[2:] == output.shape[2:]
        assert torch.equal(a, c) and torch.equal(b, c)


def _cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output, target[:, 0].long())


def test_the_loss_is_nnunets_deep_supervision_wrapper():
    spec, model, outputs, labels = _network_and_batch()
    weights = deep_supervision_weights(len(outputs))
    ours = deep_supervision_loss(outputs, labels, _cross_entropy)
    pools = [[1, 1]] + [[2, 2]] * (spec.depth - 1)
    targets = _nnunet_downsampled(labels, pools)
    by_hand = sum(w * _cross_entropy(o, t) for w, o, t in zip(weights, outputs, targets) if w != 0)
    assert torch.equal(ours, by_hand)
    assert torch.equal(deep_supervision_loss(outputs, targets, _cross_entropy), ours)  # targets given per output
    try:
        from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
        from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss
    except ImportError:
        pytest.skip("nnunetv2 is not installed: checked against nnunetv2's lines copied above only")
    wrapper = DeepSupervisionWrapper(RobustCrossEntropyLoss(), weights)
    assert torch.equal(wrapper(outputs, targets), deep_supervision_loss(outputs, labels, RobustCrossEntropyLoss()))
    # and gradients reach every head but the one weighted 0, as in nnU-Net
    model.zero_grad()
    deep_supervision_loss(outputs, labels, _cross_entropy).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if name.endswith(".head.weight")}
    lowest = f"decoder.{spec.deep_supervision}.head.weight"
    assert grads[lowest] is None and all(g is not None for n, g in grads.items() if n != lowest)


def _centres(model: torch.nn.Module, size: int) -> list[torch.Tensor]:
    """Where each output pixel is centred, in input pixels, computed by torch: every convolution and pool made an
    average (uniform weights, no bias), the up-convolutions zeroed so that each decoder level reads its skip alone,
    and a ramp (value = position) fed in: an average of a ramp is the ramp at the average's centre."""
    model = model.double()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.ConvTranspose1d):
                module.weight.zero_()
                module.bias.zero_()
            elif isinstance(module, torch.nn.Conv1d):
                module.weight.zero_()
                cin = module.in_channels // 2 if ".convs.conv0" in name and name.startswith("decoder.") else (
                    module.in_channels)  # unetgen concatenates [skip, up-sampled]: average the skip's channels
                module.weight[:, :cin] = 1 / (cin * module.kernel_size[0])
                if module.bias is not None:
                    module.bias.zero_()
        ramp = torch.arange(size, dtype=torch.float64).add(1).view(1, 1, size)
        return [(output[0, 0] - 1).mul(2).round().div(2) for output in model(ramp)]  # halves, as they are


def test_valid_networks_sample_the_target_under_each_head_pixels_centre():
    """For padding: valid, each head's pixel takes the main-output pixel under its centre (rounded up)."""
    fields = dict(depth=4, width=2, deep_supervision=2, spatial_dims=1, out_channels=2, downsampling="avgpool")
    spec = unetgen.UNetSpec(**fields)
    size = unetgen.default_input_size(spec)[0]
    plan = unetgen.make_plan(spec, (size,))
    model = unetgen.build(spec, seed=0).train()
    border = plan.border[0]
    outputs = model(torch.randn(1, 1, size))
    grids = head_grids(plan)
    main = plan.output_size[0]
    for centres, (grid,) in zip(_centres(model, size), grids):
        for i in range(grid.first, grid.first + grid.count):
            picked = grid.offset + i * grid.step
            assert picked + border - centres[i].item() in (0, 0.5) and 0 <= picked < main
        outside = [i for i in range(len(centres)) if not grid.first <= i < grid.first + grid.count]
        assert all(not 0 <= centres[i].item() - border < main - 0.5 for i in outside)
    labels = torch.arange(main).view(1, 1, main)
    kept, targets = head_targets(outputs, labels, grids)
    for output, target, (grid,) in zip(kept, targets, grids):
        assert output.shape[2] == target.shape[2] == grid.count
        kept_pixels = range(grid.first, grid.first + grid.count)
        assert target[0, 0].tolist() == [grid.offset + i * grid.step for i in kept_pixels]
    with pytest.raises(SizeError, match="grids=head_grids"):
        head_targets(outputs, labels)


def test_targets_of_another_size_are_refused():
    _, _, outputs, labels = _network_and_batch()
    with pytest.raises(SizeError, match="at the main output's size"):
        deep_supervision_loss(outputs, labels[..., :-1], _cross_entropy)
    with pytest.raises(SizeError, match="one per output"):
        deep_supervision_loss(outputs, [labels], _cross_entropy)
