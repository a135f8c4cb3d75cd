"""The training-step memory estimate (unetgen.planning.training) against the bytes of live tensors in real steps
(forward, loss, backward, optimizer step) seen by LiveBytes: the presets on the meta device at their full size,
then a matrix of variants, optimizers and autocast precisions at small sizes on the CPU; activation checkpointing;
and `unetgen build --train`. The issue's target is 5%; the replay is exact but for the loss's scalars."""

from __future__ import annotations

import pytest
import torch

import unetgen
from unetgen.cli import main
from unetgen.network.measure import LiveBytes, random_targets, training_step_peak
from unetgen.network.recompute import checkpoint_levels, checkpointed_levels
from unetgen.planning.plan import LAYER_KINDS
from unetgen.planning.training import RULES, training_memory

U = unetgen.UNetSpec
#: The replay agrees with the meter to the loss's few scalars; the issue asks for 5%.
TOLERANCE = 1e-3


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _small(spec: U, at_least: int) -> tuple[int, ...]:
    """The smallest size the network takes from ``at_least`` up on every axis."""
    if spec.output == "same":
        return (at_least,) * spec.spatial_dims
    return tuple(grid.at_least(at_least) for grid in unetgen.make_plan(spec).lattices)


def _measure(spec: U, size: tuple[int, ...], batch: int = 2, optimizer: str | None = "sgd",
             precision: str = "fp32", device: str = "cpu", checkpoint=None) -> tuple[int, int]:
    """(replayed, measured) peak of one training step; the replay as the meter sees it (``metered``)."""
    with torch.device(device):
        model = unetgen.build(spec, seed=0 if device == "cpu" else None)
        x = torch.randn(batch, spec.in_channels, *size) if device == "cpu" else torch.empty(
            batch, spec.in_channels, *size)
    if checkpoint is not None:
        checkpoint_levels(model, checkpoint)
    targets = random_targets(model, x)
    measured = training_step_peak(model, x, targets, optimizer, precision)
    plan = unetgen.make_plan(spec, size)
    replayed = training_memory(plan, batch, optimizer=optimizer, precision=precision, device="cpu",
                               checkpoint=checkpoint, metered=True)
    return replayed.peak_bytes, measured


@pytest.mark.parametrize("name", ["paper", "modern", "cicek3d", "nnunet"])
def test_presets_at_full_size_on_meta(name):
    spec = unetgen.preset(name)
    replayed, measured = _measure(spec, tuple(unetgen.make_plan(spec).input_size), batch=2, device="meta")
    assert replayed == pytest.approx(measured, rel=TOLERANCE)


VARIANTS = [
    U(width=4, depth=3),
    U(width=4, depth=3, padding="same", norm="batch", output="same"),
    U(width=4, depth=3, upsampling="upsample_conv"),
    U(width=4, depth=3, upsampling="upsample_conv", interpolation="linear", padding="same", padding_mode="reflect"),
    U(width=4, depth=3, padding="same", padding_mode="replicate"),
    U(width=4, depth=3, padding="same", padding_mode="circular", upsampling="upsample_conv"),
    U(width=4, depth=3, norm="instance", activation="leaky_relu"),
    U(width=4, depth=3, norm="group", norm_groups=2, activation="elu"),
    U(width=4, depth=3, norm="layer", activation="gelu"),
    U(width=4, depth=3, activation="prelu"),
    U(width=4, depth=3, block="residual"),
    U(width=4, depth=3, block="residual", padding="same", norm="instance", activation="silu"),
    U(width=4, depth=3, dropout=0.3, dropout_at="every_level", final_activation="softmax"),
    U(width=4, depth=3, final_activation="sigmoid", padding="same", output="same"),
    U(spatial_dims=1, depth=3, width=3, pool_sizes=[3, 2], kernel_sizes=[5, 3, 1], activation="prelu", output="same"),
    U(spatial_dims=3, depth=3, channels=[[2, 4], [4, 8], [8, 16]], up_channels="keep", norm="batch"),
    U(width=4, depth=4, downsampling="conv", padding="same", norm="instance", conv_bias=True,
      activation="leaky_relu", decoder_convs=1),
    U(width=4, depth=3, downsampling="avgpool"),
    U(width=4, depth=3, downsampling="conv", pool_sizes=[3, 3], kernel_sizes=[3, 5, 3]),
    U(width=4, depth=4, downsampling="conv", padding="same", encoder_blocks=[1, 2, 2, 3], decoder_convs=1,
      norm="instance", activation="leaky_relu", deep_supervision=2),
    U(spatial_dims=3, width=2, depth=3, downsampling="conv", padding="same", encoder_blocks=[2, 1, 2],
      pool_sizes=[[1, 2, 2], 2], kernel_sizes=[[1, 3, 3], 3, 3], norm="batch"),
    U(width=4, depth=4, padding="same", norm="batch", deep_supervision=2, final_activation="softmax"),
    U(width=4, depth=3, skip_gate="attention", norm="batch"),
    U(width=4, depth=3, skip_gate="grid_attention", padding="same"),
    U(width=4, depth=4, skip_gate="grid_attention", gates_per_level=2, gating_conv=True, fused_heads=True,
      padding="same", norm="batch", gate_reduction=1),
    U(spatial_dims=3, width=2, depth=3, skip_gate="grid_attention", gates_per_level=2, gating_conv=True,
      fused_heads=True, padding="same", norm="instance"),
    U(width=4, depth=3, skips="nested", padding="same", norm="instance", deep_supervision=1),
]


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: "-".join(
    f"{k}={v}" for k, v in s.model_dump(exclude_defaults=True).items())[:80])
def test_variants_equal_live_tensors(spec):
    replayed, measured = _measure(spec, _small(spec, 24 if spec.spatial_dims < 3 else 12))
    assert replayed == pytest.approx(measured, rel=TOLERANCE)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", None])
def test_optimizers(optimizer):
    spec = U(width=4, depth=3, norm="batch", padding="same")
    replayed, measured = _measure(spec, (32, 32), optimizer=optimizer)
    assert replayed == pytest.approx(measured, rel=TOLERANCE)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("spec", [
    U(width=4, depth=3, norm="group", norm_groups=2, padding="same", padding_mode="reflect",
      upsampling="upsample_conv", final_activation="softmax"),
    U(spatial_dims=3, width=2, depth=3, norm="instance", padding="same", activation="prelu",
      dropout=0.2, dropout_at="bottleneck"),
])
def test_autocast(spec, precision):
    replayed, measured = _measure(spec, _small(spec, 16 if spec.spatial_dims == 2 else 8), precision=precision)
    assert replayed == pytest.approx(measured, rel=TOLERANCE)


def test_the_parts_add_up():
    plan = unetgen.make_plan(unetgen.preset("nnunet"))
    cost = unetgen.estimate(plan, batch=2, training=True, optimizer="adam")
    memory = cost.training
    assert memory is not None and memory.phase == "backward"
    assert memory.gradient_bytes == memory.parameter_bytes == plan.parameters * 4  # no batch norm
    assert memory.optimizer_bytes == 2 * plan.parameters * 4
    assert cost.peak_bytes == memory.peak_bytes > memory.saved_bytes > 10 * memory.parameter_bytes
    # lower precision keeps less; no optimizer keeps no state; the inference estimate is unchanged
    assert unetgen.estimate(plan, 2, training=True, precision="bf16").peak_bytes < cost.peak_bytes
    assert unetgen.estimate(plan, 2, training=True, optimizer=None).optimizer_bytes == 0
    assert unetgen.estimate(plan, 2) == unetgen.estimate(plan, batch=2, bytes_per_value=4)
    with pytest.raises(unetgen.UNetGenError, match="optimizer 'adagrad': expected sgd, adam, adamw or none"):
        unetgen.estimate(plan, training=True, optimizer="adagrad")
    with pytest.raises(unetgen.UNetGenError, match=r"precision 'fp8'"):
        unetgen.estimate(plan, training=True, precision="fp8")


def test_two_gradients_of_one_tensor_are_summed_in_place_unless_a_dispatch_mode_is_active():
    # the rule the replay follows without the meter (``metered=False``, the default): the engine sums a second
    # gradient into the first when that one is a dense tensor nothing else holds
    def first_and_sum(mode: LiveBytes | None) -> tuple[int, int]:
        seen: dict[str, int] = {}
        x = torch.randn(8, 8, requires_grad=True)
        y = x * 2
        a = y.narrow(0, 2, 4)  # its backward writes a new, dense gradient of y's size
        b = y * 3  # made last, so its backward runs first: y's first gradient
        b.grad_fn.register_hook(lambda grads_in, grads_out: seen.update(first=grads_in[0].data_ptr()) or None)
        y.grad_fn.register_prehook(lambda grads: seen.update(total=grads[0].data_ptr()) or None)
        if mode is None:
            (a.sum() + b.sum()).backward()
        else:
            with mode:
                (a.sum() + b.sum()).backward()
        return seen["first"], seen["total"]

    first, total = first_and_sum(None)
    assert first == total
    first, total = first_and_sum(LiveBytes())
    assert first != total


def test_build_train_command(capsys):
    assert main(["build", "nnunet", "--train", "--batch", "2", "--optimizer", "adam", "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "training step, batch 2, adam, bf16 autocast, on cuda:" in out
    assert "weights" in out and "gradients" in out and "optimizer state" in out and "saved for backward" in out
    with pytest.raises(SystemExit) as exit_:
        main(["build", "paper", "--train", "--optimizer", "lion"])
    assert exit_.value.code == 2 and "invalid choice: 'lion'" in capsys.readouterr().err
    assert main(["build", "paper", "--batch", "2"]) == 2
    assert "give --train" in capsys.readouterr().err


@pytest.mark.parametrize("levels", ["levels", [0], [1, 3]])
def test_checkpointing_follows_the_estimate(levels):
    spec = U(width=4, depth=4, downsampling="conv", padding="same", encoder_blocks=[1, 2, 2, 3], decoder_convs=1,
             norm="instance", activation="leaky_relu", deep_supervision=2, dropout=0.2, dropout_at="every_level")
    replayed, measured = _measure(spec, (32, 32), checkpoint=levels)
    assert replayed == pytest.approx(measured, rel=TOLERANCE)
    plan = unetgen.make_plan(spec, (32, 32))
    assert unetgen.estimate(plan, 2, training=True, checkpoint=levels).peak_bytes < unetgen.estimate(
        plan, 2, training=True).peak_bytes


def test_checkpointed_levels_compute_the_same_step():
    spec = U(width=4, depth=3, padding="same", norm="instance", dropout=0.3, dropout_at="every_level")
    plain, wrapped = unetgen.build(spec, seed=0), unetgen.build(spec, seed=0)
    keys = list(wrapped.state_dict())
    assert checkpoint_levels(wrapped, [0, 2]) is wrapped and checkpointed_levels(wrapped) == (0, 2)
    assert list(wrapped.state_dict()) == keys  # names, checkpoints and export are unaffected
    x = torch.randn(2, 1, 32, 32)
    grads = []
    for model in (plain, wrapped):
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays the random state
        model.train()(x).square().mean().backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # inference: nothing to recompute
        torch.testing.assert_close(plain.eval()(x), wrapped.eval()(x))
    with pytest.raises(unetgen.UNetGenError, match="5 is not a level; the network has levels 0 to 2"):
        checkpoint_levels(wrapped, [0, 5])
    plan = unetgen.make_plan(spec, (32, 32))
    with pytest.raises(unetgen.UNetGenError, match="checkpoint 'encoder'"):
        unetgen.estimate(plan, training=True, checkpoint="encoder")


def test_every_layer_kind_has_a_training_rule():
    assert set(LAYER_KINDS) - {"input"} == set(RULES)
