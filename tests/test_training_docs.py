"""The training examples run: docs/training.md's sessions (train → predict → export → inspect, and the refusals) on
the synthetic cells its first example writes, and the README's ``unetgen train`` line followed by its ``predict``
line on the trained checkpoint."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch

from test_docs import blocks, check_session, run_cli
from unetgen.training.synthetic import write_cells

ROOT = Path(__file__).resolve().parents[1]
PAGE = "docs/training.md"
SESSIONS = [block for block in blocks(PAGE) if "$ unetgen train" in block.text]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: one thread each is faster than two fighting
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder as the page's reader has it after its first example: the cells written, small.yaml saved."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "80")
    first = next(block for block in blocks(PAGE) if block.lang == "python" and "write_cells" in block.text)
    exec(compile(first.text, PAGE, "exec"), {"__name__": "__docs__"})
    for block in blocks(PAGE):
        if block.file_name:
            (tmp_path / block.file_name).write_text(block.text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("block", SESSIONS, ids=[f"{b.page}:{b.line}" for b in SESSIONS])
def test_the_pages_sessions(block, workdir, capsys):
    check_session(block, capsys)


def test_the_readmes_train_line_then_its_predict_line(tmp_path, monkeypatch, capsys):
    """The README's example, small: its train line on two synthetic images (one epoch, the paper network's smallest
    patch), then its predict line on the checkpoint the run wrote."""
    monkeypatch.chdir(tmp_path)
    write_cells("cells", count=2, size=(64, 64), seed=0)
    lines = [line.split("#")[0] for b in blocks("README.md") if b.lang == "bash" for line in b.text.splitlines()]
    train = next(shlex.split(line) for line in lines if line.startswith("unetgen train"))
    predict = next(shlex.split(line) for line in lines if line.startswith("unetgen predict"))
    status, printed = run_cli(train[1:] + ["--epochs", "1", "--patch-size", "188"], capsys)
    assert status == 0, printed
    assert "network paper: patches 188×188 → 4×4, batch 1" in printed
    out = train[train.index("--out") + 1]
    predict[predict.index("--weights") + 1] = f"{out}/last.pt"
    predict[predict.index("--input") + 1] = "cells/images/cells_000.png"
    status, printed = run_cli(predict[1:], capsys)
    assert status == 0, printed
    assert Path(predict[predict.index("--output") + 1]).is_file()
