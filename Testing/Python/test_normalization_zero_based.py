"""``mr_percentile`` with ``zero_based``: the MR scale of denoising and super-resolution models, which must give
back dark tissue and air at their own values instead of flooring them at the foreground's 0.5th percentile."""

from __future__ import annotations

import numpy as np
import pytest

from MedGANLogic.errors import ModelError
from MedGANLogic.normalization import denormalize, intensity_window, normalize

CLIPPED = {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}
ZERO = dict(CLIPPED, zero_based=True)


def _head() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.zeros((4, 32, 32), np.float32)
    image[:, 8:24, 8:24] = rng.uniform(150, 400, (4, 16, 16))  # tissue
    image[:, 14:18, 14:18] = 20.0  # dark tissue inside the head (skull, CSF on T1w)
    image[:, 10, 10] = 900.0  # a bright outlier above the 99.5th percentile
    return image


def test_zero_based_window_starts_at_zero_and_round_trips_every_value():
    image = _head()
    window = intensity_window(image, ZERO)
    assert window["low"] == 0.0 and window["high"] == intensity_window(image, CLIPPED)["high"]
    out, stats = normalize(image, ZERO)
    assert out.min() == pytest.approx(-1.0) and out.max() > 1.0  # air at -1, the outlier above the range
    assert np.allclose(denormalize(out, {"kind": "same_as_input"}, stats, ZERO), image, atol=1e-3)
    clipped, cstats = normalize(image, CLIPPED)  # the clipped scale floors the dark tissue: what zero_based avoids
    back = denormalize(clipped, {"kind": "same_as_input"}, cstats, CLIPPED)
    assert back[0, 15, 15] > 100.0 and abs(back[0, 10, 10] - 900.0) > 100.0


def test_card_checks_zero_based_is_a_boolean():
    from MedGANLogic.models.card import _check_normalization

    _check_normalization("card.json", "input.normalization", ZERO, output=False)
    with pytest.raises(ModelError, match="zero_based"):
        _check_normalization("card.json", "input.normalization", dict(CLIPPED, zero_based="yes"), output=False)
