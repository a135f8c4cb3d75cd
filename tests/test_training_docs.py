"""The training examples run: docs/training.md's sessions (train → predict → export → inspect, and the refusals) on
the synthetic cells its first example writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_docs import blocks, check_session

ROOT = Path(__file__).resolve().parents[1]
PAGE = "docs/training.md"
SESSIONS = [block for block in blocks(PAGE) if "$ unetgen train" in block.text]


pytestmark = pytest.mark.usefixtures("one_thread")


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
