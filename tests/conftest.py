"""Fixtures and helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import unetgen
from unetgen.cli import main


@pytest.fixture(scope="session")
def paper_spec() -> unetgen.UNetSpec:
    return unetgen.preset("paper")


def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores, tiny networks: one thread each is faster than two spinning
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for a test (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    yield from _one_thread()


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    """One torch thread for a whole module (the memory a network uses does not depend on it)."""
    yield from _one_thread()


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``unetgen`` as a user would: its exit status, standard output and standard error."""
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit:  # --help, and argparse's own errors
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err
