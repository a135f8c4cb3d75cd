"""bfloat16 and float16 inference in torch (issue 17): ``optimize(dtype=...)`` and ``predict(precision=...)`` compute
what float32 computes within the format's rounding, and a CPU without the instructions that make them fast is
refused (optimize) or falls back to float32 with one line saying which instruction is missing (predict).

The CPU's flags are faked (``unetgen.hardware.cpu_flags``), so these tests mean the same on any CI machine; speed is
measured in ``benchmarks/precision.py``, not here.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import unetgen
from unetgen import hardware
from unetgen.cli import main
from unetgen.network.optimization import InFloat32, ToMemoryFormat

U = unetgen.UNetSpec

#: bfloat16 keeps 8 significant bits: each rounding is off by up to 2^-9 ≈ 2e-3 of the value, and a pass rounds
#: every weight and every feature map of ~10–20 layers in a row, the errors adding up where logits cancel (these
#: untrained networks measure 0.3–2.5% of the output's scale). A wrong layer (a missed fold, a crop off by one)
#: is off by ~100% of the scale, so 5% separates the two.
BF16_TOLERANCE = 5e-2
#: float16 keeps 11 bits (rounding 2^-12 ≈ 2.4e-4): eight times finer (measured 0.1–0.3%).
FP16_TOLERANCE = 1e-2
#: A CPU with every fast path (Sapphire Rapids' flags and Granite Rapids' amx_fp16), and an AVX2-only one.
FAST = frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_fp16"})
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})

VARIANTS = [
    U(width=4, depth=3),  # the paper's network, small
    U(width=4, depth=3, norm="batch", padding="same", output="same", up_channels="keep", input_size=[60, 44]),
    U(spatial_dims=3, width=4, depth=3, norm="batch", input_size=[44, 44, 44]),  # the 3D U-Net's shape, small
    U(width=4, depth=3, norm="group", norm_groups=2, activation="gelu", final_activation="softmax"),
    U(spatial_dims=1, width=4, depth=3, norm="batch", output="same", input_size=[250]),
]


@pytest.fixture
def fast_cpu(monkeypatch):
    """A CPU with AMX (bfloat16, float16) and VNNI, whatever this one has."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: FAST)


@pytest.fixture
def avx2_cpu(monkeypatch):
    """A CPU with AVX2 only: no bfloat16, float16 or VNNI instructions."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: AVX2)


def _model(spec: U) -> unetgen.UNet:
    model = unetgen.build(spec, seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # batch norms with the statistics of a trained network, so that folding them matters
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def _input(spec: U) -> torch.Tensor:
    plan = unetgen.make_plan(spec)
    return torch.randn(2, spec.in_channels, *plan.input_size, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: f"{s.spatial_dims}d-{s.norm}-{s.padding}")
@pytest.mark.parametrize(
    "dtype, tolerance", [(torch.bfloat16, BF16_TOLERANCE), (torch.float16, FP16_TOLERANCE)], ids=["bf16", "fp16"]
)
def test_lower_precision_computes_the_float32_function(fast_cpu, spec, dtype, tolerance):
    model = _model(spec)
    x = _input(spec)
    low = unetgen.optimize(model, dtype=dtype)
    with torch.inference_mode():
        expected, got = unetgen.optimize(model)(x), low(x)
    assert got.dtype == torch.float32 and got.shape == expected.shape and got.is_contiguous()
    assert float((got - expected).abs().max() / expected.abs().max()) < tolerance
    assert all(p.dtype == dtype for p in low.parameters())
    assert f"{str(dtype)[6:]} weights and feature maps" in low.optimizations
    assert next(model.parameters()).dtype == torch.float32  # the user's model is untouched


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.* is deprecated")
def test_lower_precision_scripts(fast_cpu):
    spec = VARIANTS[1]
    low = unetgen.optimize(_model(spec), dtype=torch.bfloat16)
    x = _input(spec)
    with torch.inference_mode():  # TorchScript keeps the conversions (names, not dtypes, as attributes)
        assert torch.equal(torch.jit.script(low)(x), low(x))


def test_conversions_sit_at_the_entry_and_before_the_final_activation(fast_cpu):
    low = unetgen.optimize(_model(VARIANTS[0]), dtype=torch.bfloat16)
    entry = low.encoder[0].pool
    assert isinstance(entry, ToMemoryFormat) and (entry.layout, entry.dtype) == ("channels_last", "bfloat16")
    exit_ = low.final[0]
    assert isinstance(exit_, ToMemoryFormat) and (exit_.layout, exit_.dtype) == ("contiguous", "float32")
    one_d = unetgen.optimize(_model(VARIANTS[-1]), dtype=torch.bfloat16)  # no layout change: the dtype alone
    assert (one_d.encoder[0].pool.layout, one_d.encoder[0].pool.dtype) == ("preserve", "bfloat16")


def test_a_pooling_without_a_lower_precision_kernel_runs_in_float32(fast_cpu, caplog):
    # avg_pool3d has no bfloat16 CPU kernel in torch 2.13: the network still runs, the pool in float32
    spec = U(spatial_dims=3, width=4, depth=3, downsampling="avgpool", input_size=[44, 44, 44])
    model = _model(spec)
    with caplog.at_level(logging.INFO, logger="unetgen"):
        low = unetgen.optimize(model, dtype=torch.bfloat16)
    islands = [m for m in low.modules() if isinstance(m, InFloat32)]
    try:
        with torch.no_grad():
            torch.nn.AvgPool3d(2)(torch.zeros(1, 1, 2, 2, 2, dtype=torch.bfloat16))
        native = True
    except (NotImplementedError, RuntimeError):
        native = False
    assert bool(islands) != native
    if islands:
        assert any("AvgPool3d in float32" in done for done in low.optimizations)
        assert sum("has no bf16 kernel" in r.getMessage() for r in caplog.records) == 1
    x = _input(spec)
    with torch.inference_mode():
        expected, got = model(x), low(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < BF16_TOLERANCE


@pytest.mark.parametrize(
    "dtype, missing", [(torch.bfloat16, "avx512_bf16 and amx_bf16"), (torch.float16, "amx_fp16")], ids=["bf16", "fp16"]
)
def test_a_cpu_without_the_instructions_is_refused_naming_them(avx2_cpu, dtype, missing):
    with pytest.raises(unetgen.UNetGenError) as error:
        unetgen.optimize(unetgen.build(VARIANTS[0], seed=0), dtype=dtype)
    name = {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    assert str(error.value) == (
        f"optimize: {name} would run slower than float32 here: this CPU lacks {missing}; leave dtype out "
        "(float32), or run on hardware that has them"
    )


def test_float16_needs_amx_even_with_avx512_fp16(monkeypatch):
    # oneDNN's float16 convolutions ran no faster than float32 on a CPU with avx512_fp16 but no amx_fp16
    monkeypatch.setattr(hardware, "cpu_flags", lambda: FAST - {"amx_fp16"} | {"avx512_fp16"})
    assert hardware.missing_instructions("fp16") == "this CPU lacks amx_fp16"
    assert hardware.missing_instructions("bf16") is None


def test_bad_options_are_refused(fast_cpu):
    model = unetgen.build(VARIANTS[0], seed=0)
    with pytest.raises(unetgen.UNetGenError, match=r"dtype torch.int8: give one of torch.float32, torch.bfloat16"):
        unetgen.optimize(model, dtype=torch.int8)
    with pytest.raises(unetgen.UNetGenError, match="Winograd's convolutions run float32 only"):
        unetgen.optimize(model, dtype=torch.bfloat16, winograd=True)
    with pytest.raises(unetgen.UNetGenError, match="an export writes float32"):
        unetgen.optimize(model, dtype=torch.bfloat16, for_export=True)
    same = unetgen.optimize(model, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in same.parameters())


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16\n\n"
        "processor\t: 1\nmodel name\t: Some Xeon\nflags\t\t: fpu\n"
    )
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    hardware._read_cpuinfo.cache_clear()
    try:
        assert hardware.cpu_model() == "Some Xeon"
        assert hardware.cpu_flags() == {"fpu", "avx2", "avx512f", "avx512_vnni", "amx_bf16"}
        assert hardware.instruction_sets() == ["avx2", "avx512f", "avx512_vnni", "amx_bf16"]
        assert hardware.missing_instructions("bf16") is None and hardware.missing_instructions("int8") is None
        cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd asimdhp\n")  # 64-bit ARM without bf16 or dot
        hardware._read_cpuinfo.cache_clear()
        assert hardware.missing_instructions("bf16") == "this CPU lacks bf16"
        assert hardware.missing_instructions("int8") == "this CPU lacks asimddp"
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "absent")  # not Linux: nothing to go by, no refusal
        hardware._read_cpuinfo.cache_clear()
        assert hardware.cpu_flags() is None and hardware.missing_instructions("bf16") is None
    finally:
        hardware._read_cpuinfo.cache_clear()


# --- predict ---------------------------------------------------------------------------------------------------------


def _image() -> np.ndarray:
    return np.random.default_rng(3).random((150, 170), dtype=np.float32)


def test_predict_in_bfloat16_gives_the_float32_labels(fast_cpu):
    model = _model(VARIANTS[0])
    logits = unetgen.predict(model, _image(), memory="64MiB")
    low = unetgen.predict(model, _image(), memory="64MiB", precision="bf16")
    assert low.dtype == np.float32 and low.shape == logits.shape
    assert np.abs(low - logits).max() / np.abs(logits).max() < BF16_TOLERANCE


def test_predict_falls_back_to_float32_with_one_line_saying_why(avx2_cpu, caplog):
    model = _model(VARIANTS[0])
    with caplog.at_level(logging.WARNING, logger="unetgen"):
        low = unetgen.predict(model, _image(), memory="64MiB", precision="bf16")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == ["model: bf16 would run slower than fp32 here (this CPU lacks avx512_bf16 and amx_bf16): running fp32"]
    np.testing.assert_array_equal(low, unetgen.predict(model, _image(), memory="64MiB"))


def test_predict_refuses_an_unknown_precision_and_a_precision_an_onnx_file_lacks(tmp_path):
    model = _model(VARIANTS[0])
    with pytest.raises(unetgen.UNetGenError, match=r"precision 'int4': give one of fp32, bf16, fp16"):
        unetgen.predict(model, _image(), precision="int4")


def test_cli_predict_precision(avx2_cpu, tmp_path, capsys, caplog):
    unetgen.save(_model(VARIANTS[0]), tmp_path / "model.pt")
    np.save(tmp_path / "image.npy", _image())
    argv = ["predict", "--weights", str(tmp_path / "model.pt"), "--input", str(tmp_path / "image.npy"),
            "--output", str(tmp_path / "labels.npy"), "--precision", "bf16"]
    with caplog.at_level(logging.WARNING, logger="unetgen"):
        assert main(argv) == 0
    assert f"{tmp_path / 'model.pt'}: bf16 would run slower than fp32 here (this CPU lacks " in caplog.text
    assert "wrote " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main([*argv[:-1], "int8"])
    assert exit.value.code == 2
    assert "argument --precision: invalid choice: 'int8'" in capsys.readouterr().err
