"""MedGANLogic.degradation: a super-resolved output made consistent with the input it was made from."""

import numpy as np
import pytest
from scipy import ndimage

from MedGANLogic.degradation import consistent_with
from MedGANLogic.errors import InputError
from MedGANLogic.simulate import superres_pair
from MedGANLogic.volume import Volume


def _anatomy(shape=(6, 48, 40), seed=0):
    """A smooth positive image with edges (a bright ellipse on a dimmer one, on zero background)."""
    z, y, x = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float32)
    outer = ((y - shape[1] / 2) / (0.4 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.4 * shape[2])) ** 2 < 1
    inner = ((y - shape[1] / 2) / (0.2 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.15 * shape[2])) ** 2 < 1
    image = 100.0 * outer + 150.0 * inner + 5.0 * np.random.default_rng(seed).normal(size=shape) * outer
    return ndimage.gaussian_filter(image, (0, 0.7, 0.7)).astype(np.float32)


@pytest.mark.parametrize("scale, kind", [((2, 1, 1), "thick_slices"), ((1, 2, 2), "kspace_truncate")])
def test_the_output_gives_back_the_input_and_keeps_what_the_input_did_not_measure(scale, kind):
    """Degraded as ``kind`` simulates, the consistent output gives back the input; it is nearer the truth than the
    guess it came from (the truth lies in the set it projects onto); what the input did not measure is the guess's:
    through-plane the difference within each slice pair, in-plane the k-space outside the central band."""
    truth = _anatomy((8, 48, 40))
    low = superres_pair(Volume(truth), scale, kind)[0].array
    guess = truth + np.random.default_rng(1).normal(0, 10, truth.shape).astype(np.float32)
    before = guess.copy()
    out = consistent_with(guess, low, scale, kind)
    assert np.array_equal(guess, before) and out.dtype == np.float32 and out.shape == truth.shape
    head = low > 0.2 * low.max()

    def off(image):  # how far the image, degraded, is from the input in the head (RMS)
        return float(np.sqrt(np.mean((superres_pair(Volume(image), scale, kind)[0].array - low)[head] ** 2)))

    if kind == "thick_slices":
        assert off(out) < 1e-4 * low.max()  # exact
    else:  # all but the band's unpaired Nyquist lines, which a real image cannot be given alone (and the background,
        # where the output's phase says nothing and the measured magnitude is scaled down)
        assert off(out) < 0.3 * off(guess)
    assert np.sqrt(np.mean((out - truth) ** 2)) < 0.9 * np.sqrt(np.mean((guess - truth) ** 2))
    if kind == "thick_slices":
        assert np.allclose(out[1::2] - out[0::2], guess[1::2] - guess[0::2], atol=1e-3)
    else:
        change = np.fft.fftshift(np.fft.fft2(out - guess), axes=(1, 2))
        band = np.zeros(change.shape, bool)
        band[:, 24 - 12:24 + 12, 20 - 10:20 + 10] = True
        assert np.abs(change[~band]).max() < 1e-3 * np.abs(change[band]).max()


def test_refuses_what_it_cannot_invert():
    low = np.ones((4, 6, 5), np.float32)
    with pytest.raises(InputError, match="covers the coarse"):
        consistent_with(np.ones((4, 12, 11), np.float32), low, (1, 2, 2), "kspace_truncate")
    with pytest.raises(InputError, match="kind in"):
        consistent_with(np.ones((4, 12, 10), np.float32), low, (1, 2, 2), "blur")
    with pytest.raises(InputError, match="one axis"):
        consistent_with(np.ones((4, 12, 10), np.float32), low, (1, 2, 2), "thick_slices")
