"""The plan's cost estimates against independent measurements: torch's FLOP counter, the bytes of live tensors
seen by a dispatch mode, and receptive fields read off autograd; then the memory limits and `unetgen sizes`."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import unetgen
from unetgen.cli import main
from unetgen.planning.cost import IN_PLACE_ACTIVATIONS, estimate
from unetgen.planning.field import receptive_field
from unetgen.planning.limits import parse_bytes
from unetgen.network.measure import LiveBytes

VARIANTS = [
    (unetgen.UNetSpec(width=4, depth=4), None),
    (unetgen.UNetSpec(width=4, depth=4, padding="same", norm="batch", output="same"), (101, 77)),
    (unetgen.UNetSpec(width=4, depth=3, block="residual", upsampling="upsample_conv", norm="instance"), None),
    (unetgen.UNetSpec(spatial_dims=3, depth=3, channels=[[2, 4], [4, 8], [8, 16]], up_channels="keep",
                      norm="batch", final_activation="softmax"), None),
    (unetgen.UNetSpec(spatial_dims=1, depth=3, width=3, pool_sizes=[3, 2], kernel_sizes=[5, 3, 1],
                      activation="prelu", output="same"), (250,)),
    # every activation kind: in place or not (cost.IN_PLACE_ACTIVATIONS), after a norm, a conv or a residual sum
    (unetgen.UNetSpec(width=4, depth=3, activation="leaky_relu", norm="layer"), None),
    (unetgen.UNetSpec(width=4, depth=3, activation="elu", block="residual"), None),
    (unetgen.UNetSpec(width=4, depth=3, activation="silu", block="residual", norm="group", norm_groups=2), None),
    (unetgen.UNetSpec(width=4, depth=3, activation="gelu", block="residual", padding="same"), None),
    (unetgen.UNetSpec(width=4, depth=3, activation="gelu", norm="batch"), None),
    # nnU-Net's family (issue 13): strided and average-pooled down-sampling, residual encoders, auxiliary heads
    (unetgen.UNetSpec(width=4, depth=4, downsampling="conv", padding="same", norm="instance", conv_bias=True,
                      activation="leaky_relu", decoder_convs=1, deep_supervision=2), (32, 48)),
    (unetgen.UNetSpec(width=4, depth=3, downsampling="avgpool"), None),
    (unetgen.UNetSpec(width=4, depth=3, downsampling="conv", pool_sizes=[3, 3], kernel_sizes=[3, 5, 3]), None),
    (unetgen.UNetSpec(width=4, depth=4, downsampling="conv", padding="same", encoder_blocks=[1, 2, 2, 3],
                      decoder_convs=1, norm="instance", activation="leaky_relu", deep_supervision=1), (32, 32)),
    (unetgen.UNetSpec(spatial_dims=3, width=2, depth=3, downsampling="conv", padding="same",
                      encoder_blocks=[2, 1, 2], pool_sizes=[[1, 2, 2], 2], kernel_sizes=[[1, 3, 3], 3, 3],
                      norm="batch"), (8, 16, 16)),
    # attention gates and nested skips (issue 14): MONAI's gate with its padded up-convolution, norm and activation
    # and its decoder's instance norm without scale and PReLU; Oktay's grid gate on some levels; UNet++ valid with
    # heads, 3D with interpolation, with up_norm_act and per-convolution dropout, residual with other kernels
    (unetgen.UNetSpec(width=4, depth=3, padding="same", norm="batch", conv_bias=True, downsampling="conv",
                      decoder_convs=1, decoder_norm="instance", decoder_norm_affine=False, decoder_activation="prelu",
                      up_kernel_size=3, up_norm_act=True, skip_gate="attention"), (32, 48)),
    (unetgen.UNetSpec(width=4, depth=4, skip_gate="grid_attention", norm="batch", gate_levels=[1, 2]), None),
    (unetgen.UNetSpec(width=4, depth=3, skip_gate="attention", upsampling="interpolate", interpolation="linear",
                      gate_reduction=1, output="same", activation="prelu"), (37, 30)),
    (unetgen.UNetSpec(width=4, depth=4, skips="nested", deep_supervision=2), None),
    # Oktay et al.'s published parts: two gates per level, the gating convolution, the fused deep supervision
    (unetgen.UNetSpec(width=4, depth=4, skip_gate="grid_attention", gates_per_level=2, gating_conv=True,
                      fused_heads=True, padding="same", norm="batch", gate_reduction=1), (32, 40)),
    (unetgen.UNetSpec(width=4, depth=3, skip_gate="grid_attention", gates_per_level=2, gating_conv=True,
                      norm="none"), None),
    (unetgen.UNetSpec(spatial_dims=3, width=2, depth=3, skip_gate="grid_attention", gates_per_level=2,
                      gating_conv=True, fused_heads=True, padding="same", norm="instance", output="same"),
     (17, 16, 20)),
    (unetgen.UNetSpec(width=4, depth=4, skip_gate="grid_attention", gating_conv=True, norm="batch"), None),
    (unetgen.UNetSpec(width=4, depth=4, fused_heads=True, padding="same", pool_sizes=[2, 3, 2]), (48, 36)),
    (unetgen.UNetSpec(spatial_dims=3, width=2, depth=3, skips="nested", padding="same", norm="instance",
                      upsampling="interpolate", interpolation="linear"), (16, 16, 16)),
    (unetgen.UNetSpec(width=4, depth=3, skips="nested", upsampling="upsample_conv", up_norm_act=True, norm="batch",
                      dropout=0.2, dropout_at="every_conv", activation="gelu"), None),
    (unetgen.UNetSpec(width=4, depth=3, skips="nested", block="residual", kernel_sizes=[5, 3, 3],
                      pool_sizes=[3, 2]), None),
]


@pytest.mark.parametrize("spec,size", VARIANTS)
def test_activation_memory_estimate_equals_live_tensors(spec, size):
    model = unetgen.build(spec, seed=0).eval()
    plan = unetgen.make_plan(spec, size)
    x = torch.randn(2, spec.in_channels, *plan.input_size)
    mode = LiveBytes()
    with torch.no_grad():
        mode.track(x)
        with mode:
            model(x)
    # exact but for PReLU, which allocates a few bytes of its own per call
    assert estimate(plan, batch=2).activation_bytes == pytest.approx(mode.peak, rel=0.005)


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "elu", "gelu", "silu", "prelu"])
def test_in_place_activations_are_the_ones_the_estimate_assumes(kind):
    model = unetgen.build(unetgen.UNetSpec(width=2, depth=2, activation=kind, block="residual"))
    flags = {getattr(m, "inplace", False) for m in model.modules() if type(m).__module__.endswith("activation")}
    assert flags == {kind in IN_PLACE_ACTIVATIONS}


@pytest.mark.parametrize("spec,size", VARIANTS + [(unetgen.preset("paper"), None), (unetgen.preset("cicek3d"), None)])
def test_flops_equal_torch_flop_counter(spec, size):
    plan = unetgen.make_plan(spec, size)
    with torch.device("meta"):
        model = unetgen.build(spec).eval()
        x = torch.empty(1, spec.in_channels, *plan.input_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    assert estimate(plan).flops == counter.get_total_flops()


@pytest.mark.parametrize("spec", [
    unetgen.UNetSpec(depth=3, width=2),
    unetgen.UNetSpec(depth=3, width=2, upsampling="upsample_conv"),
    unetgen.UNetSpec(depth=3, width=2, upsampling="upsample_conv", interpolation="linear"),
    unetgen.UNetSpec(depth=3, width=2, upsampling="upsample_conv", interpolation="linear", pool_sizes=[3, 4]),
    unetgen.UNetSpec(depth=3, width=2, upsampling="upsample_conv", interpolation="linear", padding="same",
                     output="same"),
    unetgen.UNetSpec(depth=3, width=2, padding="same", output="same"),
    unetgen.UNetSpec(depth=2, width=2, kernel_sizes=[5, 3], pool_sizes=[3], convs_per_level=3),
    unetgen.UNetSpec(depth=3, width=2, downsampling="conv", padding="same", decoder_convs=1),
    unetgen.UNetSpec(depth=3, width=2, downsampling="conv", pool_sizes=[3, 3], kernel_sizes=[3, 5, 3]),
    unetgen.UNetSpec(depth=3, width=2, downsampling="avgpool", upsampling="upsample_conv"),
    unetgen.UNetSpec(depth=3, width=2, downsampling="conv", padding="same", encoder_blocks=[1, 2, 1]),
    unetgen.UNetSpec(depth=3, width=2, skip_gate="attention", norm="batch"),
    unetgen.UNetSpec(depth=3, width=2, skip_gate="grid_attention", pool_sizes=[3, 2]),
    unetgen.UNetSpec(depth=3, width=2, padding="same", output="same", up_kernel_size=3, up_norm_act=True),
    unetgen.UNetSpec(depth=3, width=2, padding="same", output="same", up_kernel_size=5, pool_sizes=[3, 2]),
    unetgen.UNetSpec(depth=3, width=2, skips="nested"),
    unetgen.UNetSpec(depth=3, width=2, skips="nested", upsampling="interpolate", interpolation="linear",
                     padding="same", output="same"),
])
def test_receptive_field_equals_autograd(spec):
    # Positive weights and inputs keep every ReLU open, so the gradient of an output pixel is non-zero exactly on
    # the input pixels it depends on.
    model = unetgen.build(spec).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.abs() + 0.01)
    field = receptive_field(unetgen.make_plan(spec))[0]
    assert field.exact
    expected = field.size
    grid = unetgen.make_plan(spec).lattices[0]
    size = grid.at_least(3 * expected + grid.first)
    x = (torch.rand(1, 1, size, 8 if spec.output == "same" else grid.first) + 0.5).requires_grad_(True)
    out = model(x)
    widest = 0
    for i in range(out.shape[2]):
        (grad,) = torch.autograd.grad(out[0, 0, i, out.shape[3] // 2], x, retain_graph=True)
        rows = torch.nonzero(grad[0, 0].abs().sum(dim=1)).flatten()
        widest = max(widest, int(rows.max() - rows.min() + 1))
    assert widest == expected


def test_huge_networks_are_refused_before_allocating(capsys, tmp_path):
    spec = unetgen.UNetSpec(width=65536)
    with pytest.raises(unetgen.ResourceError, match=r"parameters need .* TiB as float32, more than the memory limit"):
        unetgen.build(spec)
    with torch.device("meta"):  # describing on meta allocates nothing: allowed
        unetgen.build(unetgen.UNetSpec(width=65536, depth=3))
    (tmp_path / "huge.yaml").write_text("width: 65536\n")
    assert main(["build", str(tmp_path / "huge.yaml")]) == 0  # describing never allocates
    assert main(["build", str(tmp_path / "huge.yaml"), "--save", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "UNETGEN_MAX_MEMORY" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_huge_inputs_are_refused_before_the_pass(monkeypatch):
    model = unetgen.build(unetgen.UNetSpec(depth=3, width=2, output="same"))
    unetgen.set_memory_limit("64MiB")
    try:
        with pytest.raises(unetgen.ResourceError, match=r"input 1×1×3000×3000: one pass needs about .* MiB"):
            model(torch.empty(1, 1, 3000, 3000))
        model(torch.zeros(1, 1, 100, 100))
        unetgen.set_memory_limit(0)
        assert unetgen.memory_limit() == 0
        monkeypatch.setenv("UNETGEN_MAX_MEMORY", "1GiB")
        unetgen.set_memory_limit(None)
        assert unetgen.memory_limit() == 2**30
    finally:
        unetgen.set_memory_limit(None)
    assert parse_bytes("1.5 GB") == int(1.5 * 2**30) and parse_bytes("0") == 0
    with pytest.raises(unetgen.ResourceError, match="not a size"):
        parse_bytes("lots")


def test_sizes_command(capsys):
    assert main(["sizes", "paper"]) == 0
    out = capsys.readouterr().out
    assert "188+16k" in out and "border 92 per side" in out and "receptive field 204" in out
    assert "556 → 372, 572 → 388, 588 → 404" in out
    assert main(["sizes", "paper", "--output-size", "388"]) == 0
    assert "output 388 ← input 572" in capsys.readouterr().out
    assert main(["sizes", "paper", "--output-size", "390"]) == 0
    assert "not reachable; nearest: 572 → 388, 588 → 404" in capsys.readouterr().out
    assert main(["sizes", "cicek3d", "--output-size", "44"]) == 0
    assert "output 44 ← input 132" in capsys.readouterr().out
    assert main(["sizes", "nnunet", "--range", "30", "60"]) == 0
    out = capsys.readouterr().out
    assert "axis 0: 16+8k" in out and "axis 1, axis 2: 32+16k" in out and "32 → 32, 40 → 40, 48 → 48, 56 → 56" in out
    assert main(["sizes", "modern"]) == 0
    assert "any size from 2" in capsys.readouterr().out
    assert main(["sizes", "paper", "--range", "600", "500"]) == 2
    # the calculator agrees with the plan on every size it lists
    for n in range(188, 1000, 16):
        assert unetgen.plan("paper", [n, n]).output_size == (n - 184, n - 184)


def test_receptive_field_of_huge_networks_is_a_bound_at_once():
    # following pixels is exact up to a probe of EXACT_FIELD_LIMIT; beyond it the interval rules give a bound
    import time

    from unetgen.planning.field import _field_bound

    for spec in (unetgen.UNetSpec(depth=12, kernel_size=15), unetgen.UNetSpec(depth=12, pool_sizes=[8] * 11)):
        start = time.perf_counter()
        fields = receptive_field(unetgen.make_plan(spec))
        assert time.perf_counter() - start < 2
        assert not fields[0].exact and str(fields[0]).startswith("≤")
    for spec, size in VARIANTS:  # the bound holds where the exact field is known
        plan = unetgen.make_plan(spec, size)
        for axis, field in enumerate(receptive_field(plan)):
            bound = _field_bound(plan, axis)
            assert field.exact and field.size <= bound


@pytest.mark.parametrize("spec,checkpoint", [
    (unetgen.preset("paper"), None),
    (unetgen.preset("modern"), None),
    (unetgen.preset("modern"), [0, 2]),
    (unetgen.preset("nnunet"), "levels"),
])
def test_training_flops_equal_torch_flop_counter_of_a_step(spec, checkpoint):
    # forward, loss, backward on the meta device, at the preset's size; checkpointed levels run their forward twice
    from unetgen.network.measure import random_targets
    from unetgen.network.recompute import checkpoint_levels
    from unetgen.planning.cost import training_macs

    plan = unetgen.make_plan(spec)
    with torch.device("meta"):
        model = unetgen.build(spec).train()
        x = torch.empty(2, spec.in_channels, *plan.input_size)
    if checkpoint is not None:
        checkpoint_levels(model, checkpoint)
    targets = random_targets(model, x)
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x)
        outputs = out if isinstance(out, (list, tuple)) else [out]
        loss = sum(torch.nn.functional.cross_entropy(o, t) for o, t in zip(outputs, targets))
        loss.backward()
    assert 2 * training_macs(plan, checkpoint) * 2 == counter.get_total_flops()
