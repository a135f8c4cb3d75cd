"""Augmentation and patches (Ronneberger et al. 2015, sec. 3.1): the image, the mask and the weight map are read
through one deformed grid, so they stay aligned pixel for pixel, in 2D and 3D; the coarse displacements are the
paper's (3×3 grid, σ = 10 px, bicubic); without augmentation a patch is the mirrored cut ``predict`` makes."""

from __future__ import annotations

import numpy as np
import pytest

from unetgen.training.augment import PAPER, Augmentation, elastic_displacement, keys_weights, mirror_indices
from unetgen.training.data import Sample
from unetgen.training.sampling import PatchShape, draw_patch


def coordinate_sample(size: tuple[int, ...]) -> Sample:
    """A sample whose channels are its own pixel coordinates, whose labels are a checkerboard of 8-pixel squares
    and whose weight map is the last coordinate: what a patch read from it says where each pixel came from."""
    axes = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in size), indexing="ij")
    labels = (sum(a // 8 for a in axes) % 2).astype(np.uint8)
    return Sample("grid", np.stack(axes), labels, None, axes[-1].copy())


@pytest.mark.parametrize("size, shape", [((160, 170), PatchShape((64, 64), (24, 24))),
                                         ((60, 64, 64), PatchShape((28, 36, 36), (12, 20, 20)))])
def test_deformed_image_mask_and_weights_stay_aligned(size, shape):
    sample = coordinate_sample(size)
    plain = Augmentation(scale=0, offset=0)  # deform and rotate, but keep grey values (the coordinates) exact
    for seed in range(4):
        patch = draw_patch(sample, shape, plain, np.random.default_rng(seed))
        inner = tuple(slice(b, b + n) for b, n in zip(shape.border, shape.out))
        where = patch.pixels[(slice(None), *inner)]   # the image coordinates each output pixel was read at
        assert patch.pixels.shape == (len(size), *shape.window) and patch.labels.shape == shape.out
        moved = np.abs(where - np.stack(np.meshgrid(*(np.arange(n) for n in shape.out), indexing="ij"))).max()
        assert moved > 3  # the grid was deformed, not cut straight
        # away from the image's edges, where the spline of the mirrored coordinates bends
        inside = np.all([(w > 6) & (w < n - 7) for w, n in zip(where, size)], axis=0)
        nearest = np.round(where).astype(int)
        expected = (sum(c // 8 for c in nearest) % 2).astype(np.uint8)
        # the label read at each output pixel is the label of the image pixel the image value came from
        assert np.array_equal(patch.labels[inside], expected[inside])
        np.testing.assert_allclose(patch.weights[inside], where[-1][inside], atol=1e-3)


def test_grey_values_vary_but_positions_do_not():
    sample = coordinate_sample((100, 100))
    shape = PatchShape((40, 40), (20, 20))
    grey = Augmentation(elastic_sigma=0, rotation=0)
    patch = draw_patch(sample, shape, grey, np.random.default_rng(1))
    straight = draw_patch(sample, shape, None, np.random.default_rng(1))
    assert np.array_equal(patch.labels, straight.labels)
    for varied, plain in zip(patch.pixels, straight.pixels):  # each channel: scale · plain + offset
        scale, offset = np.polyfit(plain.ravel(), varied.ravel(), 1)
        np.testing.assert_allclose(varied, scale * plain + offset, atol=1e-4)
        assert 0.9 <= scale <= 1.1 and -0.1 <= offset <= 0.1 and (scale, offset) != (1, 0)


def test_the_coarse_grid_is_the_papers():
    # 3×3 nodes over the window, N(0, 10 px), bicubic in between: the field passes through the nodes
    rng = np.random.default_rng(7)
    field = elastic_displacement((41, 61), 10.0, 3, rng)
    nodes = np.random.default_rng(7).normal(0.0, 10.0, size=(2, 3, 3))
    np.testing.assert_allclose(field[:, ::20, ::30], nodes, atol=1e-9)
    weights = keys_weights(41, 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    # over many draws the displacement at a node has the paper's standard deviation
    draws = np.stack([elastic_displacement((9, 9), 10.0, 3, np.random.default_rng(s))[:, 4, 4] for s in range(400)])
    assert 9.0 < draws.std() < 11.0
    assert PAPER.elastic_sigma == 10.0 and PAPER.elastic_grid == 3


def test_a_plain_patch_is_the_mirrored_cut_predict_makes():
    rng = np.random.default_rng(0)
    image = rng.random((1, 30, 40)).astype(np.float32)
    sample = Sample("a", image, (image[0] > 0.5).astype(np.uint8))
    shape = PatchShape((44, 44), (20, 20))  # 12 pixels of context on each side: past the image's edges
    patch = draw_patch(sample, shape, None, np.random.default_rng(3))
    drawn = np.random.default_rng(3)
    origin = [int(drawn.integers(0, s - 20 + 1)) for s in (30, 40)]
    padded = np.pad(image[0], 30, mode="reflect")
    cut = padded[30 + origin[0] - 12 : 30 + origin[0] + 32, 30 + origin[1] - 12 : 30 + origin[1] + 32]
    np.testing.assert_array_equal(patch.pixels[0], cut)
    np.testing.assert_array_equal(patch.labels, sample.labels[origin[0] : origin[0] + 20, origin[1] : origin[1] + 20])
    assert mirror_indices(-3, 4, 4).tolist() == [3, 2, 1, 0, 1, 2, 3]
