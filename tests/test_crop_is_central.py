"""The skip connections are centre-cropped, as in the paper (the tutorial crops the top-left corner)."""

from __future__ import annotations

import torch

import unetgen
from unetgen.network.layers import CentreCrop


def test_centre_crop_module_takes_the_middle():
    x = torch.arange(64.0).reshape(1, 1, 8, 8).expand(1, 1, 8, 8)
    out = CentreCrop([(2, 2), (1, 1)])(torch.arange(64.0).reshape(1, 1, 8, 8))
    assert out.shape == (1, 1, 4, 6)
    assert out[0, 0, 0, 0].item() == x[0, 0, 2, 1].item()


def test_valid_network_is_translation_equivariant():
    # Run a valid network on a large image and on a window of it shifted by a lattice step (16 for depth 5 at
    # pool 2 ... here depth 3: 4). With central crops the window's output is exactly the matching part of the
    # large output; a corner crop would misalign the skip connections and break this.
    torch.manual_seed(0)
    spec = unetgen.UNetSpec(depth=3, width=4, padding="valid", upsampling="transpose")
    model = unetgen.build(spec).eval()
    grid = unetgen.make_plan(spec).lattices[0]
    big = torch.randn(1, 1, grid.first + 5 * grid.step, grid.first + 4 * grid.step)
    with torch.no_grad():
        full = model(big)
        for dy, dx in [(0, 0), (grid.step, 0), (2 * grid.step, 3 * grid.step)]:
            window = big[..., dy : dy + grid.first + grid.step, dx : dx + grid.first]
            part = model(window)
            h, w = part.shape[2:]
            torch.testing.assert_close(part, full[..., dy : dy + h, dx : dx + w])
