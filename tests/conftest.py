from __future__ import annotations

import pytest

import unetgen


@pytest.fixture(scope="session")
def paper_spec() -> unetgen.UNetSpec:
    return unetgen.preset("paper")
