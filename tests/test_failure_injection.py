"""Failures injected where files are written and read: a write that dies midway never damages the old file or
leaves a partial one behind, and a damaged checkpoint is refused with a clear error.

tests/test_cli_and_checkpoints.py covers the basic cases (a truncated, text or foreign checkpoint; weights that do
not match the spec; a write callback that fails); these go further: the real ``unetgen.save`` and ``build --save``
interrupted inside ``torch.save``, at the fsync and at the rename, by an OSError, a full disk and Ctrl-C, and
checkpoints damaged at every kind of place.
"""

from __future__ import annotations

import ast
import errno
import io
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import unetgen
import unetgen.files
from unetgen.cli import main

_REAL_SAVE = torch.save
TINY = "name: tiny\ndepth: 2\nwidth: 2\npadding: same\noutput: same\ninput_size: [8, 8]\n"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    path = unetgen.save(unetgen.build(unetgen.parse_spec(TINY)), tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    return path.read_bytes()


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _half_then(exc: BaseException):
    """A torch.save that writes half of the real file, then fails with ``exc``."""
    def save(obj, handle, *args, **kwargs):
        buffer = io.BytesIO()
        _REAL_SAVE(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle.write(data[: len(data) // 2])
        raise exc

    return save


# --- interrupted writes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure,raised",
    [
        (OSError(errno.ENOSPC, "No space left on device"), unetgen.UNetGenError),
        (RuntimeError("torch failed"), RuntimeError),
        (KeyboardInterrupt(), KeyboardInterrupt),
    ],
    ids=["disk-full", "torch-error", "ctrl-c"],
)
def test_save_interrupted_midway_keeps_the_old_checkpoint(tmp_path, monkeypatch, tiny_checkpoint, failure, raised):
    target = tmp_path / "model.pt"
    target.write_bytes(tiny_checkpoint)
    before = unetgen.load(target).state_dict()
    model = unetgen.build(unetgen.parse_spec(TINY.replace("width: 2", "width: 4")))
    monkeypatch.setattr(torch, "save", _half_then(failure))
    with pytest.raises(raised):
        unetgen.save(model, target)
    assert target.read_bytes() == tiny_checkpoint
    assert _names(tmp_path) == ["model.pt"]  # no temporary file left behind
    after = unetgen.load(target).state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_full_disk_inside_torch_save_is_a_user_error(tmp_path, monkeypatch, tiny_checkpoint):
    # torch.save reports a failed write as "RuntimeError: [enforce fail ...] unexpected pos"; unetgen says why.
    target = tmp_path / "model.pt"
    target.write_bytes(tiny_checkpoint)
    real_temporary = unetgen.files.tempfile.NamedTemporaryFile

    def full_disk(*args, **kwargs):
        handle = real_temporary(*args, **kwargs)
        real_write = handle.write
        written = [0]

        def write(data):
            if written[0] + len(data) > 300:
                raise OSError(errno.ENOSPC, "No space left on device")
            written[0] += len(data)
            return real_write(data)

        handle.write = write
        return handle

    monkeypatch.setattr(unetgen.files.tempfile, "NamedTemporaryFile", full_disk)
    model = unetgen.build(unetgen.parse_spec(TINY))
    with pytest.raises(unetgen.UNetGenError, match="model.pt: cannot write: No space left on device"):
        unetgen.save(model, target)
    assert target.read_bytes() == tiny_checkpoint
    assert _names(tmp_path) == ["model.pt"]


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failure_at_fsync_or_rename_keeps_the_old_file(tmp_path, monkeypatch, step):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(unetgen.files.os, step, fail)
    with pytest.raises(unetgen.UNetGenError, match="out.bin: cannot write: Input/output error"):
        unetgen.files.atomic_write(target, lambda handle: handle.write(b"new contents"))
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.bin"]


def test_cli_save_interrupted_keeps_the_old_file(tmp_path, monkeypatch, capsys, tiny_checkpoint):
    (tmp_path / "tiny.yaml").write_text(TINY)
    target = tmp_path / "model.pt"
    target.write_bytes(tiny_checkpoint)
    monkeypatch.setattr(torch, "save", _half_then(KeyboardInterrupt()))
    assert main(["build", str(tmp_path / "tiny.yaml"), "--save", str(target)]) == 130
    assert capsys.readouterr().err == "unetgen: interrupted\n"
    monkeypatch.setattr(torch, "save", _half_then(OSError(errno.ENOSPC, "No space left on device")))
    assert main(["build", str(tmp_path / "tiny.yaml"), "--save", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"unetgen: error: {target}: cannot write: No space left on device; the file was not changed\n"
    assert target.read_bytes() == tiny_checkpoint
    assert _names(tmp_path) == ["model.pt", "tiny.yaml"]


def test_draw_output_interrupted_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "unet.svg"
    target.write_text("<svg>old</svg>")

    def refuse(*args):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(unetgen.files.os, "replace", refuse)
    assert main(["draw", "paper", "-o", str(target)]) == 2
    assert capsys.readouterr().err.startswith(f"unetgen: error: {target}: cannot write: Read-only file system")
    assert target.read_text() == "<svg>old</svg>"
    assert _names(tmp_path) == ["unet.svg"]


# --- where --save may not write ----------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_save_into_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["build", "paper", "--save", str(folder / "m.pt")]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # refused before the table and before building
        expected = f"unetgen: error: {folder / 'm.pt'}: folder {folder} is not writable; choose another folder\n"
        assert captured.err == expected
        assert _names(folder) == []
    finally:
        folder.chmod(0o755)


def test_save_where_the_folder_refuses(tmp_path, monkeypatch, capsys):
    # What a non-root user sees in a read-only folder (this test also runs as root, where chmod does not bite).
    monkeypatch.setattr(unetgen.files.os, "access", lambda path, mode: False)
    target = tmp_path / "m.pt"
    assert main(["build", "paper", "--save", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"unetgen: error: {target}: folder {tmp_path} is not writable; choose another folder\n"


def test_save_when_the_file_system_refuses(tmp_path, monkeypatch, capsys):
    # Permission granted by the folder's mode, refused by the file system (read-only mount, quota, SELinux).
    (tmp_path / "tiny.yaml").write_text(TINY)

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(unetgen.files.tempfile, "NamedTemporaryFile", refuse)
    assert main(["build", str(tmp_path / "tiny.yaml"), "--save", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    target = tmp_path / "m.pt"
    assert err == f"unetgen: error: {target}: cannot write: Read-only file system; the file was not changed\n"


@pytest.mark.parametrize(
    "where,expected",
    [("save", "cannot write there: File name too long"), ("spec", "not a file name this system can open")],
)
def test_names_the_system_cannot_open(tmp_path, capsys, where, expected):
    long_name = str(tmp_path / ("x" * 5000 + ".yaml"))
    argv = ["build", "paper", "--save", long_name] if where == "save" else ["build", long_name]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("unetgen: error: ") and expected in err, err


# --- damaged checkpoints -----------------------------------------------------------------------------------------


def _payload(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


def _write_payload(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


def _spec_json(text: str) -> str:
    return json.dumps(unetgen.parse_spec(text).model_dump(mode="json"))


DAMAGE = {
    "empty file": lambda p, good: p.write_bytes(b""),
    "zip of something else": lambda p, good: zipfile.ZipFile(p, "w").writestr("data.pkl", b"not a pickle"),
    "payload is a list": lambda p, good: _write_payload(p, [1, 2, 3]),
    "payload is a tensor": lambda p, good: _write_payload(p, torch.zeros(3)),
    "future format version": lambda p, good: _write_payload(p, {**good, "format_version": 99}),
    "no spec": lambda p, good: _write_payload(p, {k: v for k, v in good.items() if k != "spec"}),
    "spec not JSON": lambda p, good: _write_payload(p, {**good, "spec": "{depth: 5"}),
    "spec nested too deep": lambda p, good: _write_payload(p, {**good, "spec": "[" * 100_000 + "]" * 100_000}),
    "spec a list": lambda p, good: _write_payload(p, {**good, "spec": "[1, 2]"}),
    "spec with a misspelt field": lambda p, good: _write_payload(p, {**good, "spec": '{"dept": 5}'}),
    "no state_dict": lambda p, good: _write_payload(p, {k: v for k, v in good.items() if k != "state_dict"}),
    "state_dict a list": lambda p, good: _write_payload(p, {**good, "state_dict": [1]}),
    "a weight missing": lambda p, good: _write_payload(
        p, {**good, "state_dict": {k: v for k, v in list(good["state_dict"].items())[1:]}}
    ),
    "an extra weight": lambda p, good: _write_payload(
        p, {**good, "state_dict": {**good["state_dict"], "encoder.9.weight": torch.zeros(1)}}
    ),
    "a weight not a tensor": lambda p, good: _write_payload(
        p, {**good, "state_dict": {k: 1.0 for k in good["state_dict"]}}
    ),
    "a weight of the wrong shape": lambda p, good: _write_payload(
        p, {**good, "state_dict": {k: v.reshape(-1) if v.dim() > 1 else v for k, v in good["state_dict"].items()}}
    ),
    "weights of another spec": lambda p, good: _write_payload(
        p, {**good, "spec": _spec_json(TINY.replace("depth: 2", "depth: 3"))}
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoint_is_refused_clearly(tmp_path, tiny_checkpoint, damage):
    path = tmp_path / "damaged.pt"
    result = DAMAGE[damage](path, _payload(tiny_checkpoint))
    if isinstance(result, zipfile.ZipFile):
        result.close()
    with pytest.raises(unetgen.UNetGenError) as info:
        unetgen.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}") and "\n" not in message and "Traceback" not in message


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(unetgen.CheckpointError, match="is a directory, not a checkpoint file"):
        unetgen.load(tmp_path)


def test_checkpoint_cut_or_flipped_anywhere(tmp_path, tiny_checkpoint):
    """A checkpoint cut at 40 places and with bytes flipped at 60 places loads or raises UNetGenError, nothing else."""
    rng = random.Random(7)
    path = tmp_path / "damaged.pt"
    outcomes = {"loaded": 0, "refused": 0}
    cuts = sorted(rng.sample(range(len(tiny_checkpoint)), 40))
    for cut in cuts:
        path.write_bytes(tiny_checkpoint[:cut])
        with pytest.raises(unetgen.UNetGenError):
            unetgen.load(path)
    for _ in range(60):
        data = bytearray(tiny_checkpoint)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            unetgen.load(path)
            outcomes["loaded"] += 1  # a flip inside a weight's bytes is not detectable; it only changes a weight
        except unetgen.UNetGenError as exc:
            assert "\n" not in str(exc), str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


# --- the CLI tells user errors from bugs ---------------------------------------------------------------------------


def test_bug_is_one_line_exit_1_and_debug_shows_the_traceback(capsys, monkeypatch):
    import unetgen.cli as cli

    monkeypatch.setattr(cli, "render", lambda *a: {}["missing"])
    assert main(["build", "paper"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (KeyError: 'missing')" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["--debug", "build", "paper"])


def test_user_error_stays_exit_2_with_debug(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("dept: 5\n")
    assert main(["--debug", "build", str(tmp_path / "bad.yaml")]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["build", "paper", "--input-size", "abc", "572"], "argument --input-size: 'abc' is not a whole number"),
        (["build", "paper", "--input-size", "0", "572"], "argument --input-size: 0 is out of range"),
        (["build", "paper", "--input-size", "-5", "572"], "argument --input-size: -5 is out of range"),
        (["build", "paper", "--input-size", "9" * 5000, "572"], "999999999999... (5000 digits) is out of range; each"),
        (["build", "paper", "--input-size"], "argument --input-size: expected at least one argument"),
        (["build", "paper", "--nope"], "unrecognized arguments: --nope"),
        (["biuld"], "argument COMMAND: invalid choice: 'biuld'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("unetgen: error: ") and expected in err and "--help'" in err


def test_no_assert_in_the_library():
    """User input never meets an ``assert`` (``python -O`` would skip it, and it reads as a bug)."""
    source = Path(unetgen.__file__).parent
    found = [
        f"{path.relative_to(source)}:{node.lineno}"
        for path in sorted(source.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert found == []


def test_a_reader_that_leaves_early_stops_the_command_quietly(tmp_path):
    """``unetgen ... | head -1``: the pipe closes while unetgen still prints; no traceback, no 'internal error'."""
    command = [sys.executable, "-m", "unetgen.cli", "plan-for", "--spacing", "3", "0.78", "0.78", "--median-shape",
               "90", "400", "400", "--channels", "1", "--classes", "3", "--memory", "8GiB", "--explain", "-o",
               str(tmp_path / "planned.yaml")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith("patch")
        process.stdout.close()
        err = process.stderr.read()
        assert process.wait(timeout=120) == 141
    assert err == ""


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null on this system")
def test_writing_to_a_device_writes_into_it_and_keeps_the_device(tmp_path):
    """``-o /dev/null`` discards the output; an atomic write must not move a regular file onto the device."""
    import stat

    (tmp_path / "tiny.yaml").write_text(TINY)
    assert main(["plan-for", "--spacing", "1", "1", "--median-shape", "64", "64", "--channels", "1", "--classes",
                 "2", "--memory", "1GiB", "-o", "/dev/null"]) == 0
    unetgen.files.atomic_write("/dev/null", lambda handle: handle.write(b"discarded"))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert main(["build", str(tmp_path / "tiny.yaml"), "--save", "/dev/null"]) == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
