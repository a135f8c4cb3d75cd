"""`unetgen build` as a user sees it, and checkpoints that round-trip and fail clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import unetgen
from unetgen.cli import main
from unetgen.files import atomic_write

SMALL = "name: small\ndepth: 3\nwidth: 4\npadding: same\nnorm: batch\noutput: same\ninput_size: [64, 48]\n"


def test_build_paper_table(capsys):
    assert main(["build", "paper"]) == 0
    out = capsys.readouterr().out
    assert "input 1×572×572 → output 2×388×388" in out
    for row in ("encoder.0", "bottleneck", "decoder.3.up", "decoder.0.crop", "head"):
        assert row in out
    assert "64×568×568" in out and "1024×28×28" in out and "2×388×388" in out
    assert "centre-crop encoder.3 64×64 → 56×56 (4 per side)" in out
    assert "23 conv layers · 31,030,658 parameters" in out
    assert "188+16k" in out and "border 92 per side" in out


def test_default_spec_is_the_paper(capsys):
    assert main(["build"]) == 0
    assert "31,030,658 parameters" in capsys.readouterr().out
    # The defaults build the paper's architecture; the preset adds its training-time choices (dropout, init).
    training = {"name", "description", "input_size", "width", "dropout", "dropout_at", "init"}
    assert unetgen.UNetSpec().model_dump(exclude=training) == unetgen.preset("paper").model_dump(exclude=training)


def test_build_json(capsys):
    assert main(["build", "paper", "--json", "--input-size", "588", "572"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["output_shape"] == [2, 404, 388]
    assert data["parameters"] == 31_030_658
    assert data["conv_layers"] == 23
    assert [b["name"] for b in data["blocks"]][:2] == ["encoder.0", "encoder.1"]
    assert data["valid_sizes"][0] == {"axis": "height", "first": 188, "step": 16, "border": 92}


def test_installed_command_from_anywhere(tmp_path):
    # The console script works outside the repository, with a preset name and a file path.
    run = subprocess.run(["unetgen", "build", "paper"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "2×388×388" in run.stdout
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run(["unetgen", "build", str(repo / "presets" / "paper.yaml")], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0 and "31,030,658" in run.stdout
    run = subprocess.run(["unetgen", "build", "nope.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip() == "unetgen: error: nope.yaml: no such file"


def test_save_and_load_roundtrip(tmp_path, capsys):
    (tmp_path / "small.yaml").write_text(SMALL)
    ckpt = tmp_path / "small.pt"
    assert main(["build", str(tmp_path / "small.yaml"), "--save", str(ckpt)]) == 0
    assert "saved" in capsys.readouterr().out
    model = unetgen.load(ckpt).eval()
    assert model.spec == unetgen.load_spec(tmp_path / "small.yaml")
    again = unetgen.load(ckpt).eval()
    x = torch.randn(1, 1, 37, 50)
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x))
    assert model(x).shape == (1, 2, 37, 50)


def test_python_save_load_keeps_weights(tmp_path):
    torch.manual_seed(1)
    model = unetgen.build(unetgen.parse_spec(SMALL)).eval()
    path = unetgen.save(model, tmp_path / "m.pt")
    loaded = unetgen.load(path).eval()
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_bad_checkpoints(tmp_path):
    model = unetgen.build(unetgen.parse_spec(SMALL))
    good = unetgen.save(model, tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(unetgen.CheckpointError, match="truncated.pt: not a readable checkpoint"):
        unetgen.load(tmp_path / "truncated.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(unetgen.CheckpointError, match="not a readable checkpoint"):
        unetgen.load(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(unetgen.CheckpointError, match="not a unetgen checkpoint"):
        unetgen.load(tmp_path / "other.pt")
    with pytest.raises(unetgen.CheckpointError, match="no such file"):
        unetgen.load(tmp_path / "missing.pt")
    # weights that do not match the spec
    payload = torch.load(good, weights_only=True)
    payload["spec"] = json.dumps({**json.loads(payload["spec"]), "width": 8})
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(unetgen.CheckpointError, match=r"encoder.0.convs.conv0.weight has shape \(4, 1, 3, 3\)"):
        unetgen.load(tmp_path / "mismatch.pt")
    payload["spec"] = json.dumps({**json.loads(payload["spec"]), "norm": "batchnorm"})
    torch.save(payload, tmp_path / "badspec.pt")
    with pytest.raises(unetgen.SpecError, match="badspec.pt \\(spec\\): norm: got 'batchnorm'"):
        unetgen.load(tmp_path / "badspec.pt")


def test_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"format": "unetgen-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(unetgen.CheckpointError):
        unetgen.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old contents")

    def fail_midway(handle):
        handle.write(b"half of a new file")
        raise OSError("disk full")

    with pytest.raises(unetgen.UNetGenError, match="model.pt: cannot write: disk full; the file was not changed"):
        atomic_write(target, fail_midway)
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_save_into_missing_folder_is_a_user_error(tmp_path, capsys):
    code = main(["build", "paper", "--save", str(tmp_path / "no" / "such" / "m.pt")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_module_entry_point():
    run = subprocess.run([sys.executable, "-m", "unetgen.cli", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == f"unetgen {unetgen.__version__}"


def test_written_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "new.bin", lambda handle: handle.write(b"x"))
        assert path.stat().st_mode & 0o777 == 0o644
        path.chmod(0o600)
        atomic_write(path, lambda handle: handle.write(b"y"))
        assert path.stat().st_mode & 0o777 == 0o600  # an existing file keeps its mode
    finally:
        os.umask(old)
