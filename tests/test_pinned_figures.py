"""Every preset and a matrix of variants keep the figures pinned before the plan became the network's only
description (issue 12): see ``tests/pinned/figures.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "pinned"))
import figures as pinned  # noqa: E402

PINNED = json.loads((Path(__file__).parent / "pinned" / "figures.json").read_text(encoding="utf-8"))


def test_every_variant_is_pinned():
    assert sorted(PINNED) == sorted(pinned.VARIANTS)


@pytest.mark.parametrize("name", sorted(pinned.VARIANTS))
def test_figures_unchanged(name):
    now = json.loads(json.dumps(pinned.figures(pinned.VARIANTS[name])))
    was = PINNED[name]["figures"]
    for key in was:
        assert now[key] == was[key], f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(pinned.VARIANTS))
def test_words_unchanged(name):
    now = json.loads(json.dumps(pinned.words(pinned.VARIANTS[name])))
    was = PINNED[name]["words"]
    for key in was:
        assert now[key] == was[key], f"{name}: {key}"
