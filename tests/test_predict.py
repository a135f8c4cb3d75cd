"""Overlap-tile inference (Ronneberger et al. 2015, Fig. 2): tiled == one pass over the whole mirrored image for
valid networks (2D at a size off the lattice, 3D), no seams for same networks, ONNX == torch, tiles chosen from the
memory estimate, the CLI with .npy and PNG, and every bad input refused before any work."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import unetgen
from unetgen.cli import main
from unetgen.inference import runners
from unetgen.inference.images import read_image, write_result
from unetgen.inference.predict import predict
from unetgen.inference.runners import Runner
from unetgen.inference.tiling import plan_tiles, reflect
from unetgen.planning.budget import budgeted_bytes


def twins(spec: unetgen.UNetSpec, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The network, and the same weights with ``output: same``: one pass over the whole mirrored image."""
    model = unetgen.build(spec, seed=seed)
    whole = unetgen.build(spec.replace(output="same"), seed=seed)
    whole.load_state_dict(model.state_dict())
    return model, whole.eval()


def one_pass(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(np.ascontiguousarray(image))[None, None]).numpy()[0]


def close(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-5) -> float:
    assert a.shape == b.shape
    error = float(np.abs(a - b).max() / np.abs(b).max())
    assert error <= tolerance, error
    return error


RNG = np.random.default_rng(0)
IMAGE = RNG.standard_normal((300, 517)).astype(np.float32)  # 300×517: not a size the network takes


def test_valid_2d_tiled_equals_one_pass_over_the_mirrored_image():
    spec = unetgen.UNetSpec(width=4, depth=4, init="paper")  # valid sizes 92+8k, border 44
    model, whole = twins(spec)
    with pytest.raises(unetgen.SizeError, match="nearest valid sizes: 516, 524"):
        unetgen.plan(spec, IMAGE.shape)  # the network cannot take the image in one pass
    layout = plan_tiles(spec, IMAGE.shape, tile_size=196)
    assert [axis.count for axis in layout.axes] == [3, 5] and layout.mode == "exact"
    tiled = predict(model, IMAGE, tile_size=196)
    close(tiled, one_pass(whole, IMAGE))
    # The same reference spelt out: mirror by the border plus half the rounding to a valid size, one pass, crop.
    same = unetgen.plan(spec.replace(output="same"), IMAGE.shape)
    padded = np.pad(IMAGE, same.mirror, mode="reflect")
    assert all(grid.contains(n) for grid, n in zip(same.lattices, padded.shape))
    core = one_pass(model, padded)
    (a, b), (c, d) = same.output_crop
    close(tiled, core[:, a : core.shape[1] - b, c : core.shape[2] - d])
    labels = predict(model, IMAGE, tile_size=196, output="labels")
    assert labels.dtype == np.uint8 and labels.shape == IMAGE.shape
    np.testing.assert_array_equal(labels, tiled.argmax(axis=0))


@pytest.mark.parametrize(
    "changes",
    [
        {"upsampling": "upsample_conv"},  # its far-side pad spoils step − 1 pixels at each tile's far edge
        {"upsampling": "upsample_conv", "interpolation": "linear"},
        {"upsampling": "upsample_conv", "interpolation": "linear", "pool_sizes": [3, 2]},  # odd: whole phases
        {"norm": "batch", "block": "residual", "dropout": 0.5, "dropout_at": "bottleneck"},
        {"pool_sizes": [[2, 3], [2, 1]], "kernel_sizes": [[3, 5], 3, [1, 3]]},
    ],
)
def test_valid_variants_are_exact_too(changes):
    spec = unetgen.UNetSpec(width=4, depth=3, init="paper", **changes)
    model, whole = twins(spec)
    image = IMAGE[:150, :207]
    layout = plan_tiles(spec, image.shape, tile_size=100)
    assert layout.count > 1 and layout.mode == "exact"
    close(predict(model, image, tile_size=100), one_pass(whole, image))


def test_valid_3d_volume_tiled_equals_one_pass():
    spec = unetgen.UNetSpec(spatial_dims=3, depth=3, width=2, init="paper")
    model, whole = twins(spec)
    volume = RNG.standard_normal((37, 45, 29)).astype(np.float32)
    layout = plan_tiles(spec, volume.shape, tile_size=60)
    assert [axis.count for axis in layout.axes] == [2, 3, 2]
    close(predict(model, volume, tile_size=60), one_pass(whole, volume))


@pytest.mark.parametrize(
    "spec,shape,tile",
    [
        (unetgen.UNetSpec(width=4, depth=3, init="paper", output="same"), (150, 207), 100),
        (unetgen.UNetSpec(width=4, depth=3, init="paper", output="same", upsampling="upsample_conv"), (150, 207), 100),
        (unetgen.UNetSpec(spatial_dims=3, depth=3, width=2, init="paper", output="same"), (37, 45, 29), 60),
    ],
    ids=["2d", "2d-upsample-conv", "3d"],
)
def test_same_output_network_tiles_its_core_bit_for_bit(spec, shape, tile, monkeypatch):
    # The network's core runs on tiles that predict mirrors, as an output: crop network's does: each tile gives its
    # whole core output (less upsample_conv's far-side pixels), and the stitched map is the whole network's one
    # pass over the whole image to the last bit.
    image = RNG.standard_normal(shape).astype(np.float32)
    model = unetgen.build(spec, seed=0)
    layout = plan_tiles(spec, shape, tile_size=tile)
    assert layout.count > 1 and layout.mode == "exact" and not layout.plan.same_output
    for axis, border in zip(layout.axes, layout.plan.border):
        assert axis.shift == border and axis.out == axis.window - 2 * border
    # A budget with no room for optimize's copy: the tiles go through the network's own core. oneDNN picks its
    # convolution algorithm by shape, so its rounding differs between a tile and the whole image (~1e-5 of the
    # scale); torch's own convolutions add in one order at every size.
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    tiled = predict(model, image, tile_size=tile, memory=layout.peak_bytes)
    assert np.abs(tiled - one_pass(model, image)).max() == 0


def test_whole_same_output_network_mirrors_its_own_tiles():
    # An ONNX file holds the whole network: its tiles lie over the image, any size, and leave to their neighbours
    # the pixels whose input window reaches the tile's edge; a torch network's cores need none of that.
    spec = unetgen.UNetSpec(width=4, depth=3, output="same")
    image = IMAGE[:150, :207]
    whole = plan_tiles(spec, image.shape, tile_size=100, whole=True)
    core = plan_tiles(spec, image.shape, tile_size=100)
    assert whole.plan.same_output and not core.plan.same_output
    for axis, grid in zip(whole.axes, whole.plan.lattices):  # border + step − 1 given up at each inner edge
        assert axis.shift == 0 and axis.out == axis.window and axis.margins == (grid.border + grid.step - 1,) * 2
    assert all(axis.margins == (0, 0) for axis in core.axes)
    assert plan_tiles(spec.replace(output="crop"), image.shape, tile_size=100, whole=True) == plan_tiles(
        spec.replace(output="crop"), image.shape, tile_size=100
    )


@pytest.mark.parametrize("output", ["same", "crop"])
def test_same_network_blended_equals_one_pass(output):
    # Padded convolutions see zeros past a tile's edge; each tile gives the pixels whose input window crosses its
    # edge zero weight, so with batch norm (eval) the blend is the whole-image pass, and has no seams.
    spec = unetgen.UNetSpec(width=4, depth=3, padding="same", norm="batch", output=output, init="paper")
    model, whole = twins(spec)
    image = IMAGE[:150, :207]
    layout = plan_tiles(spec, image.shape, tile_size=100)
    assert layout.mode == "blend" and layout.count > 1
    close(predict(model, image, tile_size=100), one_pass(whole, image))


class TileMean(Runner):
    """A stand-in network whose output is constant over a tile (its input's mean): hard stitching would show a
    step at every tile edge, like a network that normalises each tile by its own statistics."""

    def __init__(self, spec: unetgen.UNetSpec) -> None:
        self.spec, self.source = spec, "tile mean"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        means = batch.mean(axis=tuple(range(1, batch.ndim)), keepdims=True)
        shape = (batch.shape[0], self.spec.out_channels, *batch.shape[2:])
        return np.broadcast_to(means, shape).astype(np.float32)


def test_blending_leaves_no_seams():
    spec = unetgen.UNetSpec(width=4, depth=3, padding="same", norm="instance", output="same")
    ramp = np.add.outer(np.arange(160.0), np.arange(240.0)).astype(np.float32)  # tile means differ by ~64
    layout = plan_tiles(spec, ramp.shape, tile_size=96)
    assert layout.count == 6 and all(axis.ramp >= 24 for axis in layout.axes)
    blended = predict(TileMean(spec), ramp, tile_size=96)[0]
    steps = max(np.abs(np.diff(blended, axis=axis)).max() for axis in (0, 1))
    # Neighbouring tiles' means differ by their distance (64 or 72); blended, that change is spread over the
    # raised-cosine ramp (at most 72·π/(2·24) ≈ 4.7 between neighbours) instead of a step of 64.
    assert steps < 5
    # two neighbouring ramps add up to one: sin² + cos²
    axis = layout.axes[1]
    first, second = np.array(axis.weights(0)), np.array(axis.weights(1))
    shift = axis.starts[1] - axis.starts[0]
    overlap = first[shift:] + second[: axis.out - shift]
    np.testing.assert_allclose(overlap[overlap < 1.999], 1.0, atol=1e-12)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    spec = unetgen.UNetSpec(width=4, depth=3, init="paper")
    model = unetgen.build(spec, seed=0)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    unetgen.export_onnx(model, path, input_size=[60, 60], verify=False)
    return model, path


def test_onnx_file_gives_the_torch_result(exported):
    model, path = exported
    image = IMAGE[:150, :207]
    expected = predict(model, image, tile_size=100)
    close(predict(path, image, tile_size=100), expected, 1e-4)
    session = unetgen.onnx_session(path)
    close(predict(session, image, tile_size=100), expected, 1e-4)


def test_onnx_file_of_a_same_output_network_gives_the_torch_result(tmp_path):
    spec = unetgen.UNetSpec(width=2, depth=3, init="paper", output="same")
    model = unetgen.build(spec, seed=0)
    path = unetgen.export_onnx(model, tmp_path / "same.onnx", input_size=[60, 60], verify=False).path
    image = IMAGE[:150, :207]
    expected = one_pass(model, image)
    close(predict(path, image, tile_size=100), expected, 1e-4)
    close(predict(model, image, tile_size=100), expected)


def test_tile_size_from_the_memory_budget():
    spec = unetgen.preset("paper")
    budget = 600 * 2**20
    layout = plan_tiles(spec, (4096, 4096), memory=budget)
    cost = unetgen.estimate(layout.plan, batch=layout.batch)
    assert layout.estimate_bytes == cost.peak_bytes
    # the budget holds in measured memory: the estimate with the measured overhead (issue 15)
    assert layout.peak_bytes == budgeted_bytes(layout.plan, cost) <= budget
    assert layout.peak_bytes > cost.peak_bytes
    window = layout.window[0]
    assert unetgen.plan(spec).lattices[0].contains(window)
    # the largest lattice tile that fits: one step more does not (before shrinking to the fewest tiles)
    count = layout.axes[0].count
    assert math.ceil(4096 / layout.out[0]) <= count
    bigger = unetgen.plan(spec, [window + 16 * count] * 2)
    assert budgeted_bytes(bigger, unetgen.estimate(bigger)) > budget
    # tiled peak memory does not grow with the image
    assert plan_tiles(spec, (8192, 8192), memory=budget).peak_bytes <= budget
    with pytest.raises(unetgen.ResourceError, match="smallest tile .* more than the memory budget"):
        plan_tiles(spec, (4096, 4096), memory="100MiB")
    # an image that fits is one tile: the single pass itself
    assert plan_tiles(spec, (300, 517), memory="4GiB").count == 1


def test_memory_budget_and_batches_keep_the_result():
    spec = unetgen.UNetSpec(width=4, depth=4, init="paper")
    model, whole = twins(spec)
    small = plan_tiles(spec, IMAGE.shape, memory="12MiB")
    assert small.count > 1 and small.peak_bytes <= 12 * 2**20
    close(predict(model, IMAGE, memory="12MiB", batch_size=3), one_pass(whole, IMAGE))


def test_size_calculator_agrees_with_plan_and_forward_passes():
    spec = unetgen.UNetSpec(width=2, depth=3)
    model = unetgen.build(spec).eval()
    grid = unetgen.plan(spec).lattices[0]
    listed = [n for n in range(40, 71) if grid.contains(n)]
    assert listed == [44, 48, 52, 56, 60, 64, 68]
    for n in listed:
        with torch.no_grad():
            out = model(torch.zeros(1, 1, n, n + 4))
        assert tuple(out.shape[2:]) == unetgen.plan(spec, [n, n + 4]).output_size == (n - 40, n - 36)
    with pytest.raises(unetgen.SizeError, match="nearest valid sizes: 44, 48"):
        model(torch.zeros(1, 1, 46, 44))


def test_sizes_command_lists_what_the_network_takes(tmp_path, capsys):
    path = tmp_path / "small.yaml"
    path.write_text("depth: 3\nwidth: 2\n")
    assert main(["sizes", str(path), "--range", "40", "70"]) == 0
    out = capsys.readouterr().out
    pairs = [tuple(int(x) for x in pair.split(" → ")) for pair in out.strip().splitlines()[-1].strip().split(", ")]
    model = unetgen.build(unetgen.load_spec(path)).eval()
    for n, m in pairs:
        with torch.no_grad():
            assert model(torch.zeros(1, 1, n, n)).shape[2:] == (m, m)


def test_docs_tiles_line_is_real():
    page = (Path(__file__).resolve().parents[1] / "docs" / "prediction.md").read_text(encoding="utf-8")
    line = plan_tiles(unetgen.preset("paper"), (4096, 4096), memory=2**30).describe()
    assert f"# {line}\n" in page


def test_reflect_is_numpy_reflect():
    for size in (2, 3, 7):
        padded = np.pad(np.arange(size), 20, mode="reflect")
        assert [reflect(p, size) for p in range(-20, size + 20)] == list(padded)


# --- bad input: one clear error before any work ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def counted():
    spec = unetgen.UNetSpec(width=2, depth=3, in_channels=3)
    model = unetgen.build(spec)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return model, calls


@pytest.mark.parametrize(
    "image,kwargs,message",
    [
        (np.zeros((3, 50, 50), bool), {}, "holds booleans; give integers or floats"),
        (np.zeros((3, 50, 50), complex), {}, "holds complex numbers"),
        (np.array([["a"]], object), {}, "holds Python objects"),
        (np.zeros((3, 50, 50), "U1"), {}, "holds text"),
        (np.zeros((50, 50)), {}, r"shape \(50, 50\) has no channel axis; the 2D network takes 3 channels"),
        (np.zeros((2, 3, 50, 50)), {}, r"has 4 axes; the 2D network takes \(3, H, W\)"),
        (np.zeros((50, 50, 3)), {}, r"has 50 channels \(channels first\); the network takes 3; its last axis has 3"),
        (np.zeros((3, 50, 50)), {"channels": "last"}, r"has 50 channels \(channels last\).*channels='first'"),
        (np.zeros((3, 0, 50)), {}, "is empty"),
        (np.full((3, 50, 50), np.nan), {}, "7500 NaN or infinite values .*numpy.nan_to_num"),
        (np.pad(np.zeros((3, 4, 4)), ((0, 0), (1, 1), (1, 1)), constant_values=np.inf), {},
         r"NaN or infinite values \(first at \(0, 0, 0\)"),
        (np.zeros((3, 1, 50)), {}, "height: a size of 1 cannot be mirrored"),
        (np.zeros((3, 50, 50)), {"output": "probabilities"}, "give 'logits' or 'labels'"),
        (np.zeros((3, 50, 50)), {"overlap": 0.9}, "overlap 0.9"),
        (np.zeros((3, 50, 50)), {"batch_size": 0}, "batch size 0"),
        (np.zeros((3, 50, 50)), {"memory": "lots"}, "not a size"),
        (np.zeros((3, 99, 99)), {"tile_size": 20}, "the smallest tile for this image is 44"),
        (np.zeros((3, 50, 50)), {"tile_size": (60,)}, "give one whole number per spatial axis"),
    ],
)
def test_bad_input_is_refused_before_any_work(counted, image, kwargs, message):
    model, calls = counted
    with pytest.raises(unetgen.UNetGenError, match=message):
        predict(model, image, **kwargs)
    assert not calls


def test_bad_models_are_refused(tmp_path):
    with pytest.raises(unetgen.UNetGenError, match="give a network from unetgen.build"):
        predict(object(), IMAGE)
    with pytest.raises(unetgen.CheckpointError, match="no such file"):
        predict(tmp_path / "missing.pt", IMAGE)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(unetgen.ExportError, match="not an ONNX file"):
        predict(tmp_path / "junk.onnx", IMAGE)


def test_progress_bar_only_when_asked_and_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    model = unetgen.build(unetgen.UNetSpec(width=2, depth=3), seed=0)
    image = IMAGE[:60, :60]
    count = plan_tiles(model.spec, image.shape, tile_size=52).count
    shown, quiet, piped = Terminal(), Terminal(), io.StringIO()
    for stream, progress in ((shown, True), (quiet, False), (piped, True)):
        monkeypatch.setattr(sys, "stderr", stream)
        predict(model, image, tile_size=52, progress=progress)
    assert count > 1 and f"{count}/{count}" in shown.getvalue() and "100%" in shown.getvalue()
    assert "tiles" in shown.getvalue() and "Mpx/s" in shown.getvalue()
    assert quiet.getvalue() == piped.getvalue() == ""


# --- files and the command -----------------------------------------------------------------------------------------


def test_image_files_round_trip(tmp_path):
    labels = RNG.integers(0, 3, (30, 40)).astype(np.uint8)
    write_result(tmp_path / "a.png", labels)
    read = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(read.pixels, labels)
    assert read.channels_last and "PNG 30×40, grey: 1 channel" in read.words
    volume = RNG.integers(0, 300, (5, 30, 40)).astype(np.uint16)
    write_result(tmp_path / "v.tif", volume)
    np.testing.assert_array_equal(read_image(tmp_path / "v.tif").pixels, volume)
    with pytest.raises(unetgen.UNetGenError, match="labels from 0 to 65535"):
        write_result(tmp_path / "f.png", np.zeros((4, 4), np.float32))


@pytest.fixture
def files(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    spec = unetgen.UNetSpec(name="tiny", width=4, depth=3, init="paper")
    model = unetgen.build(spec, seed=0)
    unetgen.save(model, "tiny.pt")
    torch.save(model.state_dict(), "weights.pt")
    (tmp_path / "tiny.yaml").write_text(spec.to_yaml())
    grey = (RNG.random((150, 207)) * 255).astype(np.uint8)
    Image.fromarray(grey).save("grey.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save("rgb.png")
    np.save("image.npy", grey.astype(np.float32))
    np.save("hwc.npy", grey.astype(np.float32)[..., None])
    return model, grey


def test_cli_png_to_png(files, capsys):
    model, grey = files
    assert main(["predict", "--weights", "tiny.pt", "--input", "grey.png", "--output", "mask.png",
                 "--tile-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "read grey.png: PNG 150×207, grey: 1 channel, channels last → input 1×150×207" in out
    assert "tiles: 12 tiles (3×4) of 100×100 → 60×60" in out and "exact stitching" in out
    assert "wrote mask.png: labels 150×207 uint8" in out
    expected = predict(model, grey, output="labels")
    np.testing.assert_array_equal(read_image("mask.png").pixels, expected)


def test_cli_npy_with_spec_and_state_dict(files, capsys):
    model, grey = files
    assert main(["predict", "tiny.yaml", "--weights", "weights.pt", "--input", "image.npy", "--output", "out.npy",
                 "--logits", "--memory", "8MiB"]) == 0
    out = capsys.readouterr().out
    assert "read image.npy: .npy float32 array (150, 207), channels first → input 1×150×207" in out
    close(np.load("out.npy"), predict(model, grey.astype(np.float32)))
    assert main(["predict", "--weights", "tiny.pt", "--input", "hwc.npy", "--output", "hwc.npy", "--logits",
                 "--channels-last"]) == 0
    close(np.load("hwc.npy"), np.load("out.npy"))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--weights", "tiny.pt", "--input", "rgb.png", "--output", "m.png"],
         "rgb.png: shape (150, 207, 3) has 3 channels (channels last); the network takes 1"),
        (["--weights", "tiny.pt", "--input", "grey.png", "--output", "m.png", "--logits"],
         "m.png: an image file holds labels; write logits to a .npy file"),
        (["--weights", "tiny.pt", "--input", "grey.png", "--output", "m.jpg"], "m.jpg: unknown output type"),
        (["--weights", "weights.pt", "--input", "grey.png", "--output", "m.png"], "holds weights without a spec"),
        (["paper", "--weights", "tiny.pt", "--input", "grey.png", "--output", "m.png"],
         "tiny.pt: holds another network than the spec 'paper' (depth: 3 in the file, 5 in the spec"),
        (["--weights", "tiny.pt", "--input", "nope.png", "--output", "m.png"], "nope.png: no such file"),
        (["--weights", "tiny.pt", "--input", "grey.png", "--output", "nodir/m.png"], "folder nodir does not exist"),
        (["--weights", "tiny.pt", "--input", "hwc.npy", "--output", "m.png"], "if the channels are last, say so"),
        (["--weights", "tiny.pt", "--input", "grey.png", "--output", "m.png", "--memory", "50KiB"],
         "more than the memory budget of 50.0 KiB"),
    ],
)
def test_cli_errors(files, capsys, argv, message):
    assert main(["predict", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unetgen: error: ") and message in err and "Traceback" not in err
    assert not any(p.name.startswith("m.") for p in Path(".").iterdir())


def test_tiles_so_small_they_are_mostly_border_are_warned_about(caplog):
    spec = unetgen.UNetSpec(width=4, depth=3)
    model = unetgen.build(spec, seed=0)
    image = IMAGE[:100, :120]
    with caplog.at_level("WARNING", logger="unetgen"):
        predict(model, image, memory="150KiB")
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "each image pixel goes through the network" in record.getMessage()
    assert "a larger memory budget (--memory, memory=)" in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="unetgen"):
        predict(model, image)  # the default budget: one tile
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_predict_runs_an_optimized_copy_where_the_budget_has_room(monkeypatch):
    # batch norm with a trained network's statistics: folded in the copy, and the result is still the network's
    spec = unetgen.UNetSpec(width=4, depth=3, norm="batch", init="paper")
    model, whole = twins(spec)
    with torch.no_grad():
        for net in (model, whole):
            for module in net.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.copy_(torch.linspace(-0.5, 0.5, module.num_features))
                    module.running_var.copy_(torch.linspace(0.5, 2.0, module.num_features))
    copies = []
    real = runners.optimize
    monkeypatch.setattr(runners, "optimize", lambda m, **k: copies.append(real(m, **k)) or copies[-1])
    model.train()
    image = IMAGE[:150, :207]
    close(predict(model, image, tile_size=100), one_pass(whole, image))
    assert len(copies) == 1 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in copies[0].modules())
    assert model.training and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    # a budget with no room beside the pass for a second set of weights: the network itself runs
    tight = plan_tiles(spec, image.shape, tile_size=100, batch_size=1).peak_bytes
    close(predict(model, image, tile_size=100, batch_size=1, memory=tight), one_pass(whole, image))
    assert len(copies) == 1 and model.training
