"""The hand-written networks `benchmarks/run.py` times unetgen against are the networks they claim to be: the
published parameter counts, and with unetgen's weights the same outputs as `unetgen.build`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import unetgen

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_unets import ModernUNet, PaperUNet, modern_state_dict, paper_state_dict  # noqa: E402

CASES = {
    # Ronneberger et al. 2015 (1 input channel, 2 classes); the common same + BN + transposed-conv U-Net (3 in, 2 out)
    "paper": (PaperUNet, paper_state_dict, 31_030_658, (188, 188)),
    "modern": (ModernUNet, modern_state_dict, 31_037_698, (64, 48)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_reference_is_the_published_network(name):
    make, rename, parameters, size = CASES[name]
    with torch.device("meta"):
        reference = make()
    assert sum(p.numel() for p in reference.parameters()) == parameters
    built = unetgen.build(name, seed=0)
    # every weight has a unetgen key of the same shape, and every unetgen key has a weight
    renamed = rename(reference)
    assert {key: tuple(value.shape) for key, value in renamed.items()} == {
        key: tuple(value.shape) for key, value in built.state_dict().items()
    }


@pytest.mark.parametrize("name", list(CASES))
def test_reference_with_unetgen_weights_computes_the_same(name):
    make, rename, _, size = CASES[name]
    built = unetgen.build(name, seed=0).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # batch norms as after training, so their keys must land on the right layers
        for module in built.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    reference = make().eval()
    inverse = dict(zip(rename(reference), reference.state_dict()))
    reference.load_state_dict({inverse[key]: value for key, value in built.state_dict().items()})
    x = torch.randn(1, built.spec.in_channels, *size, generator=generator)
    with torch.no_grad():
        expected = built(x)
        got = reference(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()
