"""``ct_window`` with ``knots``: a piecewise-linear HU map that gives soft tissue more of the network's range than a
linear [-1000, 2000] HU window does, and undoes exactly."""

from __future__ import annotations

import numpy as np
import pytest

from MedGANLogic.errors import ModelError
from MedGANLogic.models.card import _check_normalization
from MedGANLogic.normalization import denormalize, normalize

KNOTS = [[-1000, -1], [-200, -0.5], [200, 0.3], [2000, 1]]
LINEAR = {"kind": "ct_window", "window": [-1000, 2000], "range": [-1, 1]}
PIECEWISE = dict(LINEAR, knots=KNOTS)


def test_knots_map_each_segment_linearly_and_clip_outside_the_window():
    hu = np.array([-3000, -1000, -600, -200, 0, 200, 1100, 2000, 2500], np.float32).reshape(1, 3, 3)
    out, stats = normalize(hu, PIECEWISE)
    assert out.dtype == np.float32 and out.shape == hu.shape
    assert np.allclose(out.ravel(), [-1, -1, -0.75, -0.5, -0.1, 0.3, 0.65, 1, 1], atol=1e-6)
    # soft tissue (0 to 40 HU) spans three times what it spans in the linear window
    soft = np.array([0.0, 40.0], np.float32)
    assert np.ptp(normalize(soft, PIECEWISE)[0]) == pytest.approx(3 * np.ptp(normalize(soft, LINEAR)[0]), rel=1e-4)
    back = denormalize(out, {"kind": "same_as_input"}, stats, PIECEWISE)
    assert np.allclose(back.ravel(), np.clip(hu, -1000, 2000).ravel(), atol=1e-3)
    assert np.allclose(denormalize(out, PIECEWISE), back)  # as an output spec of its own
    again = out.copy()
    assert denormalize(again, {"kind": "same_as_input"}, stats, PIECEWISE, inplace=True) is again  # no copy
    assert np.array_equal(again, back)


def test_knots_work_in_chunks_on_large_volumes():
    from MedGANLogic import normalization

    hu = np.random.default_rng(0).uniform(-1100, 2100, (3, 40, 50)).astype(np.float32)
    whole = normalization._interp(hu, *normalization._knots(PIECEWISE))
    chunked = normalization._interp(hu, *normalization._knots(PIECEWISE), chunk=777)
    assert np.array_equal(whole, chunked)


@pytest.mark.parametrize("knots, message", [
    ([[-1000, -1]], "at least two"),
    ([[-1000, -1], [0, 0.5], [-100, 0.6], [2000, 1]], "increase strictly"),
    ([[-1000, -1], [0, 0.5], [100, 0.2], [2000, 1]], "increase strictly"),
    ([[-900, -1], [2000, 1]], "must run from"),
    ([[-1000, -1], [2000, 0.9]], "must run from"),
    ("steep", "at least two"),
])
def test_card_checks_the_knots(knots, message):
    _check_normalization("card.json", "output.normalization", PIECEWISE, output=True)
    with pytest.raises(ModelError, match=message):
        _check_normalization("card.json", "output.normalization", dict(LINEAR, knots=knots), output=True)
    for other in ({"kind": "fixed", "window": [0, 1]}, {"kind": "mr_percentile"}):
        with pytest.raises(ModelError, match="only allowed with kind ct_window"):
            _check_normalization("card.json", "input.normalization", dict(other, knots=[[0, -1], [1, 1]]),
                                 output=False)
