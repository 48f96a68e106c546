"""The validation no report scores (MedGANLogic.evaluation.validation): its cases, its scores, its real slice."""

import numpy as np

from MedGANLogic.evaluation import real_data, validation


def _slice():
    yy, xx = np.mgrid[:32, :32]
    body = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 14 ** 2
    return np.where(body, 40.0 + 30.0 * np.sin(xx / 3.0), -1000.0).astype(np.float32)


def test_ldct_cases_are_seeded_and_scored_against_their_references():
    """Ten settings (two pixel sizes x three projection-domain doses/kernels and two smoothed noises), the same
    bytes again; a denoiser that returns each reference beats the noisy input everywhere, and the means split
    projection-domain from smoothed-noise cases."""
    cases = validation.ldct_cases(_slice(), 0.7)
    again = validation.ldct_cases(_slice(), 0.7)
    assert len(cases) == 10 and len({c.name for c in cases}) == 10
    assert [c.pixel_mm for c in cases] == [0.7] * 5 + [1.4] * 5 and sum(c.smoothed for c in cases) == 4
    for a, b in zip(cases, again):
        assert np.array_equal(a.inputs, b.inputs) and a.inputs.shape[0] == 4
        assert a.inputs.shape[1:] == a.reference.shape == a.body.shape
    smoothed = next(c for c in cases if c.smoothed)
    assert abs(float((smoothed.inputs - smoothed.reference).std()) - validation.SMOOTHED_NOISE_HU) < 0.5
    by_name = {c.name: c for c in cases}
    noisy = validation.score_ldct(cases, None)

    def oracle(slices, pixel_mm):  # the reference of the case these inputs are
        case = next(c for c in cases if c.pixel_mm == pixel_mm and np.array_equal(c.inputs, slices))
        return np.stack([case.reference] * len(slices))

    perfect = validation.score_ldct(cases, oracle)
    assert all(perfect[n] > noisy[n] for n in by_name)
    assert noisy["smoothed mean"] == np.mean([noisy[c.name] for c in cases if c.smoothed])
    assert noisy["projection mean"] == np.mean([noisy[c.name] for c in cases if not c.smoothed])


def test_validation_images_are_fetched_with_the_real_images_but_kept_out_of_the_reports():
    for name, spec in real_data.VALIDATION_IMAGES.items():
        assert spec.file in real_data.FILES and name not in real_data.IMAGES
        assert real_data.FILES[spec.file].package in real_data.PACKAGES
    assert all(row["image"] not in real_data.VALIDATION_IMAGES for row in real_data.inventory())
