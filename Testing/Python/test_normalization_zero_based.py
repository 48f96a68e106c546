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


def test_a_fixed_output_window_from_zero_keeps_dark_tissue():
    """A synthesised MR contrast (``fixed`` window, e.g. mr-t1-to-t2's T2w): an auto window from the foreground's
    0.5th percentile floored the skull and air inside the head at that value (13 % of the head of a validation
    phantom's T2w lay below it); ``zero_based`` starts the window at 0 and clips nothing."""
    from MedGANLogic.models.card import _check_normalization
    from MedGANLogic.train.data.slices import auto_window

    image = _head()
    clipped_window = auto_window([image], {"kind": "fixed"})
    zero_window = auto_window([image], {"kind": "fixed", "zero_based": True})
    assert clipped_window[0] > 20.0 and zero_window[0] == 0.0 and zero_window[1] == clipped_window[1]
    fixed = {"kind": "fixed", "window": zero_window, "range": [-1, 1], "zero_based": True}
    _check_normalization("card.json", "output.normalization", fixed, output=True)
    out, _ = normalize(image, fixed)
    assert np.allclose(denormalize(out, fixed), image, atol=1e-3)  # dark tissue and the outlier come back
    floored = denormalize(normalize(image, dict(fixed, window=clipped_window, zero_based=False))[0],
                          dict(fixed, window=clipped_window))
    assert floored[0, 15, 15] == pytest.approx(clipped_window[0], abs=1e-3)  # what the window from zero avoids
    with pytest.raises(ModelError, match="zero_based"):
        _check_normalization("card.json", "output.normalization", dict(fixed, zero_based=1), output=True)
