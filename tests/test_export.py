"""ONNX export: every preset and a matrix of variants export with dynamic sizes, pass onnx.checker and match torch
on onnxruntime; the metadata carries the spec and the size rules; the runner refuses bad sizes with the plan's
message; failed checks and interruptions write nothing; big models go to external data.

An export costs seconds (torch.export and its decompositions are single-threaded Python), so the heavy ones —
the full-size paper network through the real command, the presets and the variants — start in two background
processes when this module starts, and the quick tests run meanwhile; each heavy case exports once and checks
everything about its file.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import unetgen
from unetgen.planning import sizes
from unetgen.cli import main
from unetgen.errors import ExportError, SizeError
from unetgen.export.contract import AxisRule
from unetgen.export.reader import OnnxInfo
from unetgen.export.writer import (
    TOLERANCE, ExportReport, _same_output_arithmetic, _same_output_minimum, _SameOutputForExport,
)

ONNX_DOC = (Path(__file__).resolve().parents[1] / "docs" / "onnx.md").read_text(encoding="utf-8")


def _small(spec: unetgen.UNetSpec) -> unetgen.UNetSpec:
    """The same architecture at two channels per convolution and its smallest valid size (3D presets on a CPU)."""
    if spec.channels is not None:
        channels = [[2] * len(c) if isinstance(c, list) else 2 for c in spec.channels]
        spec = spec.replace(channels=channels, norm_groups=1)
    else:
        spec = spec.replace(width=2, max_channels=None, norm_groups=1)
    return spec.replace(input_size=[grid.first for grid in unetgen.make_plan(spec).lattices])


#: The presets besides `paper` (exported full size by test_paper_full_size_cli), and variants that complete the
#: matrix: 1D/2D/3D × valid/same padding × crop/same output × both up-samplings × every norm (none: paper; batch:
#: cicek3d, modern; instance: nnunet; group and layer: the variants).
CASES = {
    "modern": unetgen.preset("modern").replace(input_size=[64, 64]),  # full width
    "cicek3d": _small(unetgen.preset("cicek3d")),
    "nnunet": _small(unetgen.preset("nnunet")),
    "1d-valid-same-upconv-group": unetgen.UNetSpec(
        spatial_dims=1, depth=3, width=4, upsampling="upsample_conv", interpolation="linear", norm="group",
        norm_groups=2, block="residual", output="same", input_size=[100],
    ),
    "3d-same-crop-upconv-layer": unetgen.UNetSpec(
        spatial_dims=3, depth=2, width=2, padding="same", padding_mode="reflect", upsampling="upsample_conv",
        norm="layer", activation="prelu", final_activation="softmax", input_size=[12, 10, 14],
    ),
}
TINY = unetgen.UNetSpec(name="tiny", depth=1, width=2, input_size=[8, 8])


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def _plan_error(spec: unetgen.UNetSpec, size: tuple[int, ...]) -> str:
    with pytest.raises(SizeError) as caught:
        unetgen.check_input_size(spec, size)
    return str(caught.value)


@dataclass
class _Background:
    """The heavy exports, running: ``unetgen export --onnx`` for the paper network, and export_onnx per case."""

    paper: subprocess.Popen[str]
    paper_folder: Path
    cases: dict[str, Future[ExportReport]]


@pytest.fixture(scope="module", autouse=True)
def background(request, tmp_path_factory):
    """Start the heavy exports in the background when this session runs a test that needs them."""
    wanted = {item.name.split("[")[0] for item in request.session.items}
    if not wanted & {"test_variant_exports_and_verifies", "test_paper_full_size_cli"}:
        yield None
        return
    folder = tmp_path_factory.mktemp("exports")
    (folder / "paper").mkdir()
    paper = subprocess.Popen(
        [sys.executable, "-m", "unetgen.cli", "export", "--onnx"], cwd=folder / "paper", text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    cases = {}
    for name, spec in CASES.items():
        (folder / name).mkdir()
        cases[name] = pool.submit(unetgen.export_onnx, spec, folder / name / f"{name}.onnx")
    try:
        yield _Background(paper, folder / "paper", cases)
    finally:
        pool.shutdown(cancel_futures=True)
        if paper.poll() is None:
            paper.kill()
        paper.communicate()


def test_same_output_arithmetic_matches_the_plan():
    """The branch-free mirror/crop arithmetic in the graph equals the plan's for every size the file takes."""
    specs = [unetgen.preset("paper"), unetgen.preset("modern"), unetgen.preset("nnunet"), *CASES.values()]
    for spec in specs:
        for grid in unetgen.make_plan(spec).lattices:
            low = _same_output_minimum(grid)
            for size in range(low, low + 4 * grid.step + 40):
                pad_before, _, crop_before, _ = sizes.same_output_pads(size, grid.first, grid.step, grid.border)
                core = sizes.same_output_io(size, grid).core_input
                assert _same_output_arithmetic(size, grid.first, grid.step, grid.border) == (
                    pad_before, core, crop_before
                )


def test_mirroring_by_gather_equals_the_module():
    """The export's reflected-index gather equals the module's rounds of reflect padding (several rounds too)."""
    spec = unetgen.UNetSpec(depth=3, width=2, output="same")  # border 20: small sizes mirror in many rounds
    model = unetgen.build(spec, seed=0).eval()
    wrapper = _SameOutputForExport(model)
    with torch.no_grad():
        for size in [(2, 3), (5, 2), (7, 9), (45, 31)]:
            x = torch.randn(2, 1, *size)
            torch.testing.assert_close(wrapper(x), model(x), rtol=0, atol=0)
    assert model.same_output  # the wrapper leaves the user's module as it was


def test_runner_refuses_what_the_file_does_not_take():
    """Beyond the plan's rules: a dynamic axis below the file's proven minimum, a static file's other shapes."""
    spec = unetgen.UNetSpec(spatial_dims=3, depth=3, width=2, padding="same", padding_mode="reflect", output="same")
    rules = tuple(AxisRule(name, 8, 4, 0, True, 5) for name in ("axis 0", "axis 1", "axis 2"))
    info = OnnxInfo(Path("r.onnx"), spec, "0", 18, "image", "logits", None, (12, 9, 10), rules, (), 0, {})
    info.check((2, 1, 5, 9, 10))
    with pytest.raises(SizeError) as caught:
        info.check((2, 1, 3, 9, 10))
    assert str(caught.value) == (
        "input 3×9×10: axis 0: r.onnx takes sizes from 5 up along this axis (its graph is proven from there); "
        "export this size with --static --input-size 3 9 10"
    )
    with pytest.raises(SizeError, match=r"^input has 2 channels; the network takes 1$"):
        info.check((1, 2, 9, 9, 9))
    with pytest.raises(SizeError, match=r"^input has shape \(1, 1, 9, 9\); expected \(batch, 1, size, size, size\)$"):
        info.check((1, 1, 9, 9))
    with pytest.raises(SizeError, match="a size of 1 cannot be mirrored"):  # the plan's own rule comes first
        info.check((1, 1, 1, 9, 9))
    static = OnnxInfo(Path("s.onnx"), spec, "0", 18, "image", "logits", 3, (12, 9, 10),
                      tuple(AxisRule(r.name, 8, 4, 0, False, n) for r, n in zip(rules, (12, 9, 10))), (), 0, {})
    static.check((3, 1, 12, 9, 10))
    with pytest.raises(SizeError, match=r"^input 2×1×12×9×10: s.onnx has fixed shapes and takes only 3×1×"):
        static.check((2, 1, 12, 9, 10))


def test_cli_exports_a_checkpoint_static(tmp_path, monkeypatch, capsys):
    """--weights exports the checkpoint's weights; --static --batch fixes every dimension; --opset 20 is kept."""
    monkeypatch.chdir(tmp_path)
    Path("net.yaml").write_text("name: net\ndepth: 2\nwidth: 2\noutput: same\nnorm: batch\n", encoding="utf-8")
    assert main(["build", "net.yaml", "--save", "net.pt"]) == 0
    capsys.readouterr()
    argv = ["export", "--weights", "net.pt", "--onnx", "out.onnx", "--static", "--batch", "3", "--opset", "20",
            "--input-size", "21", "17"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3×1×21×17 → 3×2×21×17" in out and "static shapes" in out
    assert "untrained" not in out and "batch norm, with its running statistics, folded into the convolutions" in out
    model = onnx.load("out.onnx")
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 20)]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [3, 1, 21, 17]

    trained = unetgen.load("net.pt").eval()
    x = np.random.default_rng(1).standard_normal((3, 1, 21, 17), dtype=np.float32)
    with torch.no_grad():
        expected = trained(torch.from_numpy(x)).numpy()
    session = unetgen.onnx_session("out.onnx")
    np.testing.assert_allclose(session.run(x), expected, rtol=0, atol=TOLERANCE * np.abs(expected).max())
    with pytest.raises(SizeError, match=r"fixed shapes and takes only 3×1×21×17; export again with --static"):
        session.run(np.zeros((3, 1, 21, 19), np.float32))
    with pytest.raises(SizeError, match="fixed shapes"):
        session.run(np.zeros((1, 1, 21, 17), np.float32))

    assert main(["inspect", "out.onnx", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["shapes"] == "static" and shown["batch"] == 3 and shown["opset"] == 20
    assert unetgen.spec_from_dict(shown["spec"]) == trained.spec


def test_batch_norm_is_folded_into_the_exported_convolutions(tmp_path):
    """The file holds no BatchNormalization or Dropout node, and still computes what the module computes."""
    spec = unetgen.UNetSpec(depth=2, width=4, norm="batch", dropout=0.5, dropout_at="bottleneck",
                            input_size=[44, 44])
    model = unetgen.build(spec, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics far from a fresh norm's 0 and 1, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) * 4 + 0.1)
                module.weight.copy_(torch.randn(module.num_features, generator=generator))
    model.train()
    report = unetgen.export_onnx(model, tmp_path / "bn.onnx")
    assert report.ok and model.training  # the caller's module is left as it was
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    ops = {node.op_type for node in onnx.load(str(report.path)).graph.node}
    assert "Conv" in ops and not ops & {"BatchNormalization", "Dropout"}
    x = np.random.default_rng(2).standard_normal((1, 1, 60, 60), dtype=np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    got = unetgen.onnx_session(report.path).run(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * np.abs(expected).max())


def test_failed_check_writes_nothing_and_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "tiny.onnx"
    target.write_bytes(b"the old file")
    monkeypatch.setattr("unetgen.export.writer.TOLERANCE", -1.0)  # every comparison fails
    report = unetgen.export_onnx(TINY, target, raise_on_failure=False)
    assert not report.ok and report.path is None and len(report.errors) == 3
    assert all("exceeds" in error for error in report.errors)
    assert target.read_bytes() == b"the old file" and _files(tmp_path) == ["tiny.onnx"]

    Path(tmp_path / "tiny.yaml").write_text("name: tiny\ndepth: 1\nwidth: 2\ninput_size: [8, 8]\n", encoding="utf-8")
    assert main(["export", str(tmp_path / "tiny.yaml"), "--onnx", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"unetgen: error: {target}: check failed, nothing written: 1×1×8×8: max |Δ|")
    assert target.read_bytes() == b"the old file" and _files(tmp_path) == ["tiny.onnx", "tiny.yaml"]


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize(
    ("where", "failure", "raised"),
    [
        ("unetgen.export.writer._check_shapes", _interrupt, KeyboardInterrupt),  # interrupted once the file is staged
        ("unetgen.export.writer._save", _disk_full, ExportError),  # the disk fills up while staging
    ],
)
def test_interrupted_or_failed_write_leaves_no_file(tmp_path, monkeypatch, where, failure, raised):
    target = tmp_path / "tiny.onnx"
    target.write_bytes(b"the old file")
    monkeypatch.setattr(where, failure)
    with pytest.raises(raised) as caught:
        unetgen.export_onnx(TINY, target)
    if raised is ExportError:
        assert str(caught.value) == f"{target}: cannot write: No space left on device; the file was not changed"
    assert target.read_bytes() == b"the old file" and _files(tmp_path) == ["tiny.onnx"]


def test_opset_raised_by_the_exporter_is_refused(tmp_path):
    with pytest.raises(ExportError, match=r"opset 13 was requested, but torch's exporter wrote opset 18"):
        unetgen.export_onnx(TINY, tmp_path / "tiny.onnx", opset=13)
    assert _files(tmp_path) == []


def test_models_over_2gb_use_external_data(tmp_path, monkeypatch):
    """Beyond the protobuf limit the weights go to one file beside the model; re-exporting cleans it up."""
    target = tmp_path / "tiny.onnx"
    monkeypatch.setattr("unetgen.export.writer.INLINE_LIMIT", 0)
    report = unetgen.export_onnx(TINY, target)
    assert report.ok and report.external_data is not None
    assert _files(tmp_path) == sorted(["tiny.onnx", report.external_data.name])
    assert re.fullmatch(r"tiny\.onnx\.[0-9a-f]{8}\.data", report.external_data.name)
    assert f"weights in {report.external_data.name}" in report.describe()
    info = unetgen.read_onnx_info(target)
    assert info.external_data == (report.external_data.name,)
    assert unetgen.onnx_session(target).run(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 2, 4, 4)

    monkeypatch.undo()
    again = unetgen.export_onnx(TINY, target)
    assert again.external_data is None and _files(tmp_path) == ["tiny.onnx"]  # the old weights file is gone
    assert unetgen.onnx_session(target).run(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 2, 4, 4)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "paper", "--input-size", "571", "572"], "input 571×572: height: encoder.1 max-pools an odd size"),
        (["export", "--batch", "2"], "--batch: fixes the batch size of a static file; add --static"),
        (["export", "--onnx", "paper.txt"], "paper.txt: an ONNX file name ends in .onnx"),
        (["export", "--onnx", "missing/paper.onnx"], "folder missing does not exist"),
        (["export", "--opset", "3"], "opset 3: give an ONNX opset from 7 to"),
        (["export", "--weights", "none.pt"], "none.pt: no such file"),
        (["inspect", "none.onnx"], "none.onnx: no such file"),
    ],
)
def test_cli_user_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("unetgen: error: ") and message in err and len(err.splitlines()) == 1
    assert _files(tmp_path) == []


def test_inspect_refuses_files_that_are_not_unetgen_onnx(tmp_path, capsys):
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    plain = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert main(["inspect", str(tmp_path / "junk.onnx")]) == 2
    assert "not an ONNX file" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "plain.onnx")]) == 2
    assert "an ONNX file without unetgen's metadata" in capsys.readouterr().err
    with pytest.raises(ExportError, match="without unetgen's metadata"):
        unetgen.onnx_session(tmp_path / "plain.onnx")


# --- the heavy cases, exported in the background ----------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_variant_exports_and_verifies(name, background):
    spec = CASES[name]
    plan = unetgen.make_plan(spec)
    report = background.cases[name].result()
    assert report.ok and report.errors == ()
    assert _files(report.path.parent) == [f"{name}.onnx"]  # one self-contained file, nothing left beside it
    assert report.external_data is None

    # Verified at the export size, at another size and at batch 2, each shape exact and within the tolerance.
    shapes = [c.input_shape for c in report.checks]
    assert len(set(shapes)) == 3 and shapes[0] == (1, spec.in_channels, *plan.input_size)
    assert [s[0] for s in shapes] == [1, 1, 2]
    if spec.output == "same":
        assert all(n % 2 for shape in shapes[1:] for n in shape[2:])  # odd sizes
    else:
        assert all(g.contains(n) for shape in shapes for n, g in zip(shape[2:], plan.lattices))
    for check in report.checks:
        assert check.ok and check.output_shape == check.expected_shape
        assert check.expected_shape[2:] == unetgen.make_plan(spec, check.input_shape[2:]).output_size
        assert check.max_error <= TOLERANCE * max(check.scale, 1e-6)

    # The file: opset as requested, dynamic batch and sizes, named input and output, metadata read back.
    model = onnx.load(str(report.path))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 18)]
    (graph_in,), (graph_out,) = model.graph.input, model.graph.output
    assert graph_in.name == "image"
    assert graph_out.name == ("logits" if spec.final_activation == "none" else "probabilities")
    dims = graph_in.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == spec.in_channels
    assert all(d.dim_param and not d.dim_value for d in dims[2:])
    info = unetgen.read_onnx_info(report.path)
    assert info.spec == spec and info.version == unetgen.__version__ and not info.static
    assert [(a.first, a.step, a.border) for a in info.axes] == [(g.first, g.step, g.border) for g in plan.lattices]

    # The runner takes what the plan takes, and refuses the rest with the plan's own message.
    session = unetgen.onnx_session(report.path)
    small = report.checks[2].input_shape
    assert session.run(np.zeros(small, np.float32)).shape == report.checks[2].expected_shape
    if spec.output == "crop":
        bad = tuple(g.first + 1 for g in plan.lattices)
    else:
        bad = (1,) * spec.spatial_dims
    with pytest.raises(SizeError) as caught:
        session.run(np.zeros((1, spec.in_channels, *bad), np.float32))
    assert str(caught.value) == _plan_error(spec, bad)


def _masked(text: str) -> str:
    """Output with what changes from run to run (the measured errors and scales, the seconds) replaced by '#'."""
    text = re.sub(r"^(  \S+ → \S+) +\S+ / \S+ = \S+ +(ok|FAILED)", r"\1 # \2", text, flags=re.M)
    return re.sub(r" in \d+\.\d s$", " in # s", text, flags=re.M)


def _doc_block(command: str) -> str:
    start = ONNX_DOC.index(f"$ {command}\n") + len(command) + 3
    return ONNX_DOC[start : ONNX_DOC.index("```", start)]


def test_paper_full_size_cli(background, monkeypatch, capsys):
    """`unetgen export --onnx` exports the full paper network to paper.onnx; docs/onnx.md shows the real output."""
    out, err = background.paper.communicate()
    assert background.paper.returncode == 0, err
    monkeypatch.chdir(background.paper_folder)
    assert _files(Path(".")) == ["paper.onnx"]
    assert "1×1×572×572 → 1×2×388×388" in out and out.count(" ok\n") == 3
    assert _masked(out) == _masked(_doc_block("unetgen export --onnx"))

    assert main(["inspect", "paper.onnx"]) == 0
    assert capsys.readouterr().out == _doc_block("unetgen inspect paper.onnx")

    # docs/onnx.md's "running the file" example runs and prints what it claims.
    start = ONNX_DOC.index("```python\n", ONNX_DOC.index("## Running the file")) + len("```python\n")
    code = ONNX_DOC[start : ONNX_DOC.index("```", start)]
    exec(compile(code, "docs/onnx.md", "exec"), {})
    claimed = [line.split("# ")[-1] for line in code.splitlines() if "print(" in line]
    assert capsys.readouterr().out.splitlines() == claimed

    session = unetgen.onnx_session("paper.onnx")
    assert session.run(np.zeros((2, 1, 188, 204), np.float32)).shape == (2, 2, 4, 20)
    # Plain onnxruntime fails deep inside the graph on a size off the lattice; the runner says why, first.
    with pytest.raises(Exception, match="Concat|concat"):
        session.session.run(None, {"image": np.zeros((1, 1, 189, 188), np.float32)})
    with pytest.raises(SizeError) as caught:
        session.run(np.zeros((1, 1, 571, 572), np.float32))
    assert str(caught.value) == _plan_error(unetgen.preset("paper"), (571, 572))
    assert "nearest valid sizes: 556, 572" in str(caught.value)
