"""Intensity normalisation (issue 16): chosen for training, recorded in the checkpoint, applied by predict and carried
into the ONNX metadata, so a trained network never meets raw values it was not trained on."""

from __future__ import annotations

import numpy as np
import pytest

import unetgen
from unetgen.errors import UNetGenError
from unetgen.training.intensity import Intensity, fit_intensity, intensity_from_dict

SMALL = unetgen.UNetSpec(depth=3, width=4)


def test_zscore_is_per_image_and_channel():
    image = np.stack([np.arange(12.0).reshape(3, 4), np.full((3, 4), 7.0)])  # one channel constant
    out = Intensity("zscore").apply(image.astype(np.uint16))
    assert out.dtype == np.float32
    first = (image[0] - image[0].mean()) / image[0].std()
    np.testing.assert_allclose(out[0], first, rtol=1e-6)
    assert np.all(out[1] == 0)  # a constant channel becomes zeros, not noise / 1e-8


def test_percentile_clips_to_the_training_foreground_then_standardises():
    values = np.arange(1000.0).reshape(1, 10, 100)
    labels = np.zeros((10, 100), np.int64)
    labels[:, 50:] = 1  # the foreground: 50..99 of each row
    fitted = fit_intensity("percentile", [values], [labels], percentiles=(10, 90))
    foreground = values[0][labels > 0]
    low, high = np.percentile(foreground, [10, 90])
    clipped = np.clip(foreground, low, high)
    assert fitted.low == (low,) and fitted.high == (high,)
    assert fitted.mean == pytest.approx((clipped.mean(),)) and fitted.std == pytest.approx((clipped.std(),))
    out = fitted.apply(np.array([[[-1e6, 1e6]]]))
    expected = (np.array([low, high]) - clipped.mean()) / clipped.std()
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)
    assert intensity_from_dict(fitted.to_dict()) == fitted


def test_none_and_bad_entries():
    assert Intensity("none").apply(np.array([[3]], np.uint8)).tolist() == [[3.0]]
    assert intensity_from_dict(None).method == "none"
    with pytest.raises(UNetGenError, match="method 'zscor' is not one of zscore, percentile, none .did you mean"):
        intensity_from_dict({"method": "zscor"}, "x.pt")
    with pytest.raises(UNetGenError, match="normalisation 'ct'"):
        fit_intensity("ct", [])


def test_checkpoint_predict_and_onnx_carry_it(tmp_path):
    image = (np.random.default_rng(0).random((50, 61)) * 60000).astype(np.uint16)
    model = unetgen.build(SMALL, seed=0)
    raw = unetgen.predict(model, image.astype(np.float32))
    model.intensity = Intensity("zscore").to_dict()
    normalised = unetgen.predict(model, image)
    by_hand = unetgen.predict(unetgen.build(SMALL, seed=0), ((image - image.mean()) / image.std()).astype(np.float32))
    np.testing.assert_allclose(normalised, by_hand, atol=1e-5)
    assert np.abs(raw - normalised).max() > 1  # raw 16-bit values give another answer
    unetgen.save(model, tmp_path / "m.pt")
    loaded = unetgen.load(tmp_path / "m.pt")
    assert loaded.intensity == {"method": "zscore"}
    np.testing.assert_array_equal(unetgen.predict(tmp_path / "m.pt", image), normalised)
    unetgen.export_onnx(loaded, tmp_path / "m.onnx")
    info = unetgen.read_onnx_info(tmp_path / "m.onnx")
    assert info.intensity == {"method": "zscore"}
    assert "intensities: z-score per image and channel (metadata 'unetgen.intensity')" in info.describe()
    np.testing.assert_allclose(unetgen.predict(tmp_path / "m.onnx", image), normalised, atol=1e-4)
    # a network saved without one predicts on raw values, as before
    unetgen.save(unetgen.build(SMALL, seed=0), tmp_path / "raw.pt")
    np.testing.assert_array_equal(unetgen.predict(tmp_path / "raw.pt", image.astype(np.float32)), raw)
