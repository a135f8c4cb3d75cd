"""Every preset and a matrix of variants work with torch.jit.script, torch.export and torch.compile, and a built
network trains under DistributedDataParallel (gloo, 2 CPU processes)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import unetgen


def _small(spec: unetgen.UNetSpec) -> unetgen.UNetSpec:
    """The same architecture at a few channels per level, planned at its smallest sizes (fast on a CPU)."""
    if spec.channels is not None:
        channels = [[2] * len(c) if isinstance(c, list) else 2 for c in spec.channels]
        return spec.replace(channels=channels, input_size=None, in_channels=1, out_channels=2, norm_groups=1)
    return spec.replace(width=2, max_channels=None, input_size=None, in_channels=1, out_channels=2, norm_groups=1)


def _input(spec: unetgen.UNetSpec, batch: int = 2) -> torch.Tensor:
    if spec.output == "same":
        size = [19, 22, 17][: spec.spatial_dims]
    else:
        size = [g.first + g.step for g in unetgen.make_plan(spec).lattices]
    return torch.randn(batch, spec.in_channels, *size)


PRESETS = [_small(unetgen.preset(name)) for name in unetgen.preset_names()]
VARIANTS = [
    unetgen.UNetSpec(depth=3, width=2, padding="same", norm="batch", output="same"),
    unetgen.UNetSpec(depth=3, width=2, upsampling="upsample_conv", interpolation="linear", norm="group",
                     norm_groups=2, activation="gelu", output="same", final_activation="softmax"),
    unetgen.UNetSpec(spatial_dims=1, depth=3, width=2, block="residual", norm="instance", activation="prelu"),
    unetgen.UNetSpec(spatial_dims=3, depth=2, width=2, padding="same", padding_mode="reflect", norm="layer",
                     upsampling="upsample_conv", dropout=0.2, dropout_at="every_level", output="same"),
]
CASES = PRESETS + VARIANTS
IDS = [s.name if s.name != "unet" else f"variant{i}" for i, s in enumerate(CASES)]


@pytest.mark.parametrize("spec", CASES, ids=IDS)
def test_torchscript(spec):
    model = unetgen.build(spec, seed=0).eval()
    scripted = torch.jit.script(model)
    x = _input(spec)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))
    assert list(scripted.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize("spec", CASES, ids=IDS)
def test_torch_export(spec):
    model = unetgen.build(spec, seed=0).eval()
    x = _input(spec)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))


def test_torch_export_with_dynamic_sizes():
    # Valid sizes are first + step * k: with derived dimensions torch.export keeps batch and k symbolic (it
    # assumes k >= 2; the ONNX export checks k = 0 and 1 separately).
    spec = _small(unetgen.preset("paper"))
    model = unetgen.build(spec, seed=0).eval()
    grid = unetgen.make_plan(spec).lattices[0]
    x = torch.randn(2, 1, grid.first + 3 * grid.step, grid.first + 5 * grid.step)
    k_h, k_w = torch.export.Dim("k_h", min=2, max=64), torch.export.Dim("k_w", min=2, max=64)
    dims = {"x": {0: torch.export.Dim("batch", min=1, max=64), 2: grid.first + grid.step * k_h,
                  3: grid.first + grid.step * k_w}}
    exported = torch.export.export(model, (x,), dynamic_shapes=dims)
    other = torch.randn(3, 1, grid.first + 7 * grid.step, grid.first + 2 * grid.step)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(other), model(other))


@pytest.mark.parametrize("spec", CASES, ids=IDS)
def test_torch_compile_captures_the_graph(spec):
    # aot_eager checks what dynamo and AOTAutograd make of the module without the minutes inductor's C++ codegen
    # takes on this CPU; one full inductor compile follows below.
    torch._dynamo.reset()
    model = unetgen.build(spec, seed=0).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = _input(spec)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_torch_compile_inductor():
    torch._dynamo.reset()
    spec = _small(unetgen.preset("paper"))
    model = unetgen.build(spec, seed=0).eval()
    compiled = torch.compile(model, fullgraph=True)
    x = _input(spec)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, spec_json: str, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        spec = unetgen.UNetSpec.model_validate_json(spec_json)
        model = torch.nn.parallel.DistributedDataParallel(unetgen.build(spec, seed=0))
        optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        generator = torch.Generator().manual_seed(rank)
        losses = []
        for _ in range(3):
            x = torch.randn(2, 1, 24, 24, generator=generator)
            target = torch.randint(0, 2, (2, 24, 24), generator=generator)
            loss = torch.nn.functional.cross_entropy(model(x), target)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        torch.save({"losses": losses, "state": model.module.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_data_parallel_trains(tmp_path):
    spec = unetgen.UNetSpec(depth=3, width=4, padding="same", norm="batch", output="same")
    mp.spawn(_ddp_worker, args=(2, _free_port(), spec.model_dump_json(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    initial = unetgen.build(spec, seed=0).state_dict()
    for key, value in ranks[0]["state"].items():
        # the replicas stay identical (gradients all-reduced); the weights moved
        if "running" not in key and "num_batches" not in key:
            torch.testing.assert_close(value, ranks[1]["state"][key])
    assert not torch.equal(ranks[0]["state"]["head.weight"], initial["head.weight"])
    assert all(torch.isfinite(torch.tensor(r["losses"])).all() for r in ranks)
