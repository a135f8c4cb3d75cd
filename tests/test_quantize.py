"""int8 and float16 ONNX files (issue 17): calibrated on the user's images tiled as predict tiles them, checked
against the float32 network on held-out images, refused (nothing written, one line, exit 2) below the thresholds;
the metadata records how, `inspect` shows it, `predict` runs the file.

The network is small and *trained* (``tests/data/precision/cells_tiny.pt``, made by ``make_fixture.py`` there):
an untrained network's logits nearly tie, so rounding flips its labels, and agreement would say nothing about
quantization. Speed is measured in ``benchmarks/precision.py``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import unetgen
from unetgen import hardware
from unetgen.cli import main
from unetgen.export import quantize
from unetgen.export.contract import META_AGREEMENT, META_CALIBRATION, META_PRECISION
from unetgen.inference.images import read_image
from unetgen.inference.runners import OnnxRunner
from unetgen.training.synthetic import write_cells

CHECKPOINT = Path(__file__).parent / "data" / "precision" / "cells_tiny.pt"
#: The export size: small, on the network's lattice (44 + 4k).
SIZE = [124, 124]


@pytest.fixture
def int8_is_faster(monkeypatch):
    """The export's timing of the two files, decided: int8 twice as fast (the real timing is noisy on a busy CI)."""
    monkeypatch.setattr(quantize, "pass_seconds", lambda paths, tile, name: [1.0, 0.5])


@pytest.fixture(scope="module")
def model() -> unetgen.UNet:
    return unetgen.load(CHECKPOINT)


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """Synthetic cells like the ones the network was trained on, but not those (another seed): 5 images."""
    root = tmp_path_factory.mktemp("cells")
    write_cells(root, count=5, size=(150, 170), seed=101)
    return root / "images"


def test_an_int8_file_is_calibrated_checked_recorded_and_run(model, cells, tmp_path, int8_is_faster):
    path = tmp_path / "cells.onnx"
    report = unetgen.export_onnx(model, path, input_size=SIZE, quantize="int8", calibration=cells)
    assert report.path == path and report.precision == "int8" and report.ok
    lowered = report.lowered
    # one image in five is held out (5 images: the last), the other four calibrate
    assert lowered.agreement.source == f"1 image held out of {cells}/" and lowered.agreement.images == 1
    assert lowered.calibration["images"] == 4 and lowered.calibration["tiles_used"] == lowered.calibration["tiles"]
    assert lowered.agreement.agreement >= 0.99 and all(d is None or d >= 0.95 for d in lowered.agreement.dice)
    text = report.describe()
    assert "quantized to int8 (QDQ, weights per channel, activations uint8 per tensor): calibrated (min-max) on" in text
    assert f"checked against the float32 network on 1 image held out of {cells}/ (needs ≥ 99.00% agreement" in text

    # the file: QDQ operators of the standard domain only, the metadata of a unetgen file plus the three new keys
    proto = onnx.load(str(path))
    kinds = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= kinds and "ConvTranspose" not in kinds
    dequantized = {out for node in proto.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    assert not [node.name for node in proto.graph.node if node.op_type == "Shape" and node.input[0] in dequantized]
    # the first convolution reads 1 channel: it stays float32 (its weights not quantized), the others are int8
    weights = {t.name: t for t in proto.graph.initializer}
    float_convs = [node for node in proto.graph.node if node.op_type == "Conv" and node.input[1] in weights]
    assert [weights[node.input[1]].dims[1] for node in float_convs] == [1]
    assert lowered.calibration["float32_convolutions"] == 1
    assert "1 convolution(s) on ≤ 4 channels kept float32" in text
    assert {entry.domain for entry in proto.opset_import} <= {"", "ai.onnx"}
    props = {entry.key: entry.value for entry in proto.metadata_props}
    assert props[META_PRECISION] == "int8"
    assert json.loads(props[META_CALIBRATION])["source"] == f"{cells}/"
    recorded = json.loads(props[META_AGREEMENT])
    assert recorded["label_agreement"] == pytest.approx(lowered.agreement.agreement, abs=1e-6)
    assert recorded["thresholds"] == {"min_agreement": 0.99, "min_dice": 0.95, "max_error": None}
    assert not any(key.startswith("onnx.") for key in props)  # the tools' own entries are dropped

    info = unetgen.read_onnx_info(path)
    assert info.precision == "int8" and info.to_dict()["agreement"]["images"] == 1
    shown = info.describe()
    assert "precision: int8 (metadata 'unetgen.precision')" in shown
    assert "  calibrated (min-max) on" in shown and "  checked against float32 on 1 image held out of" in shown

    # predict runs the file, tiles included: an image larger than one tile, labels as float32's
    picture = read_image(sorted(cells.iterdir())[-1]).pixels
    expected = unetgen.predict(model, picture, output="labels", tile_size=92)
    got = unetgen.predict(path, picture, output="labels", tile_size=92)
    assert np.mean(got == expected) >= 0.99
    with pytest.raises(unetgen.UNetGenError, match=r"precision bf16: an ONNX file runs at the precision it was "
                                                   r"exported at \(int8\)"):
        OnnxRunner(path).set_precision("bf16")


def test_a_calibration_that_cannot_represent_the_data_is_refused_and_nothing_written(
    cells, tmp_path, capsys, int8_is_faster
):
    # constant images give every activation a range of one value: real images are clipped, labels collapse
    np.save(tmp_path / "constant.npy", np.full((3, 150, 170), 120, np.float32))
    target = tmp_path / "out.onnx"
    status = main([
        "export", "--weights", str(CHECKPOINT), "--onnx", str(target), "--input-size", *map(str, SIZE),
        "--quantize", "int8", "--calibration", str(tmp_path / "constant.npy"), "--check-images", str(cells),
    ])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = err.splitlines()
    assert line.startswith(f"unetgen: error: {target}: int8 file refused, nothing written: on 5 images "
                           f"from {cells}/, ")
    assert "(needs 0.950: " in line and " short)" in line
    assert line.endswith("; calibrate on images like the ones it will segment (--calibration), or lower the "
                         "thresholds (--min-agreement, --min-dice)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["constant.npy"]  # no file, no staging folder


def test_a_float16_file_for_gpu_runtimes(model, cells, tmp_path):
    path = tmp_path / "cells16.onnx"
    report = unetgen.export_onnx(model, path, input_size=SIZE, precision="fp16", check_images=cells)
    assert report.precision == "fp16" and report.lowered.agreement.agreement >= 0.999
    assert "converted to float16 (weights and operations; input and output float32)" in report.describe()
    proto = onnx.load(str(path))
    assert proto.graph.initializer[0].data_type == onnx.TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    info = unetgen.read_onnx_info(path)
    assert info.precision == "fp16" and info.lowered(META_CALIBRATION) is None


def test_without_vnni_weights_keep_seven_bits_and_a_line_says_why(model, cells, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    fp32 = tmp_path / "fp32.onnx"
    unetgen.export_onnx(model, fp32, input_size=SIZE, verify=False)
    tiles = [np.random.default_rng(0).standard_normal((1, 1, 124, 124), dtype=np.float32)]
    with caplog.at_level(logging.WARNING, logger="unetgen"):
        summary = quantize.quantize_int8(fp32, tmp_path / "int8.onnx", tiles, "image")
    assert summary["reduce_range"] is True
    seconds = quantize.pass_seconds((fp32, tmp_path / "int8.onnx"), tiles[0], "image")
    assert len(seconds) == 2 and all(0 < t < 60 for t in seconds)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.startswith("int8: this CPU lacks avx512_vnni and avx_vnni (VNNI's 8-bit dot products): weights are "
                           "kept to 7 bits (reduce_range)")


# --- the options, checked before any export work ---------------------------------------------------------------


def test_held_out_images_are_spread_and_end_with_the_last():
    assert quantize.held_out(5, 0.2) == {4}
    assert quantize.held_out(10, 0.2) == {4, 9}
    assert quantize.held_out(2, 0.2) == {1}
    assert len(quantize.held_out(3, 0.9)) == 2  # never all of them


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(quantize="int8"), "--quantize int8 needs --calibration DIR_OR_NPY: images like the ones the network"),
        (dict(quantize="int4"), "quantize 'int4': give 'int8'"),
        (dict(quantize="int8", precision="fp16"), "--quantize int8 and --precision fp16: give one of them"),
        (dict(precision="bf16"), "precision 'bf16': give one of fp32, fp16, int8"),
        (dict(calibration="x"), "--calibration / --check-images: calibrate an int8 file; add --quantize int8"),
        (dict(precision="fp16", calibration="x"), "--calibration: float16 needs no calibration"),
        (dict(quantize="int8", calibration="ONE", thresholds={"min_agreement": 99}),
         "min_agreement 99: give a share from 0 to 1"),
        (dict(quantize="int8", calibration="ONE", thresholds={"min_dcie": 0.9}), "thresholds: "),
        (dict(quantize="int8", calibration="ONE"), "1 image; give at least 2 (one is held out to check the file on)"),
        (dict(quantize="int8", calibration="TWO", verify=False), "--no-verify: a int8 file is always checked"),
        (dict(quantize="int8", calibration="MISSING"), "no such file"),
        (dict(quantize="int8", calibration="BADSHAPE"), "the calibration .npy holds a stack (N, 1, size, size)"),
    ],
)
def test_bad_options_are_refused_before_the_export(tmp_path, options, message):
    np.save(tmp_path / "one.npy", np.zeros((1, 60, 60), np.float32))
    np.save(tmp_path / "two.npy", np.zeros((2, 60, 60), np.float32))
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2, 60, 60), np.float32))
    paths = {"ONE": tmp_path / "one.npy", "TWO": tmp_path / "two.npy", "MISSING": tmp_path / "missing.npy", "BADSHAPE": tmp_path / "bad.npy"}
    if options.get("calibration") in paths:
        options = dict(options, calibration=paths[options["calibration"]])
    spec = unetgen.UNetSpec(width=4, depth=2, input_size=[60, 60])
    with pytest.raises(unetgen.ExportError) as error:
        unetgen.export_onnx(spec, tmp_path / "x.onnx", **options)
    assert message in str(error.value)
    assert not (tmp_path / "x.onnx").exists()


def test_agreement_says_by_how_much_it_missed():
    agreement = quantize.Agreement("2 images", 2, 1000, 0.9712, (0.99, 0.8123, None), 3.0, 12.0, ("a.png", 0.95))
    thresholds = quantize.Thresholds(min_agreement=0.99, min_dice=0.95, max_error=0.1)
    assert agreement.misses(thresholds) == [
        "labels agree on 97.12% of pixels (needs 99.00%: 1.88 points short)",
        "Dice of class 1 0.812 (needs 0.950: 0.138 short)",
        "output error 0.25 of the scale (allowed 0.1: 2.5× over)",
    ]
    assert agreement.misses(quantize.Thresholds(0.9, 0.8)) == []


def test_where_int8_runs_slower_the_float32_file_is_written_with_one_line_saying_why(
    model, cells, tmp_path, monkeypatch, caplog
):
    # onnxruntime's int8 kernels lose to its float32 ones on some networks (3D maps with few channels)
    monkeypatch.setattr(quantize, "pass_seconds", lambda paths, tile, name: [0.8, 1.2])
    path = tmp_path / "slow.onnx"
    with caplog.at_level(logging.WARNING, logger="unetgen"):
        report = unetgen.export_onnx(model, path, input_size=SIZE, quantize="int8", calibration=cells)
    why = ("onnxruntime ran the int8 file slower than float32 on this CPU (1.2 s against 0.8 s for a tile of "
           "192×212: its int8 kernels have no fast path for these convolutions); wrote float32 instead")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [f"int8: {why}"]
    assert report.precision == "fp32" and report.lowered.fallback == why and f"int8: {why}" in report.describe()
    info = unetgen.read_onnx_info(path)
    assert info.precision == "fp32" and META_CALIBRATION not in info.metadata
    assert "QuantizeLinear" not in {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("dims", [2, 3])
def test_an_up_convolution_becomes_a_1x1_convolution_and_a_pixel_shuffle(dims):
    # the same products and sums in an order onnxruntime runs in int8 (it has no int8 ConvTranspose)
    h = onnx.helper
    generator = np.random.default_rng(0)
    kernel = [2] * dims
    weight = generator.standard_normal((6, 4, *kernel)).astype(np.float32)
    bias = generator.standard_normal(4).astype(np.float32)
    size = [5, 7, 3][:dims]
    graph = h.make_graph(
        [h.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=kernel, kernel_shape=kernel)], "up",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 6, *(f"s{i}" for i in range(dims))])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 4, *(f"t{i}" for i in range(dims))])],
        [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(bias, "b")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    x = generator.standard_normal((2, 6, *size)).astype(np.float32)

    def run(proto: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    expected = run(model)
    assert quantize.up_convolutions_as_convolutions(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [node.op_type for node in model.graph.node if node.op_type in ("Conv", "ConvTranspose")] == ["Conv"]
    got = run(model)
    assert got.shape == (2, 4, *(2 * s for s in size))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
