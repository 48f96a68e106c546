"""Fit to this scan (MedGANLogic.adapt): the fitting loop, self-supervised denoising for MR, CT, PET and ultrasound,
self-supervised through-plane super-resolution, saving a fit as a model, and the phantoms that test them.

Every fit here is tiny (a few slices of a 4 mm phantom, a small network, tens of steps); budgets are counted in
steps, never in seconds.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_inplane_card

from MedGANLogic.adapt import FitBudget, fit_denoise, fit_superres, save_fitted_model
from MedGANLogic.adapt.denoise import R2R_ALPHA
from MedGANLogic.adapt.loop import fit_steps
from MedGANLogic.adapt.noise import canonical_modality, poisson_gain, rician_sigma
from MedGANLogic.adapt.superres import DEFAULT_LR as SR_LR
from MedGANLogic.errors import CancelledError, InputError, ModelError
from MedGANLogic.models.adapted import ScanFittedNetwork
from MedGANLogic.models.blindspot import BlindSpotUNet
from MedGANLogic.simulate import low_dose_volume, make_subject, thick_slices
from MedGANLogic.simulate.pet import UPTAKE_SUV, simulate_pet
from MedGANLogic.simulate.tissue import TISSUES
from MedGANLogic.simulate.ultrasound import RAYLEIGH_MEAN, simulate_ultrasound
from MedGANLogic.volume import Volume

TINY = {"features": 8, "patch": 32, "batch_size": 4}  # a network and batches that take well under a second a step
SLICES = slice(22, 28)  # six axial slices through the ventricles of the 4 mm phantom


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks and patches are tiny: one thread avoids waiting for a second (on a busy machine, 5x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def steps(n: int) -> FitBudget:
    return FitBudget(seconds=3600.0, max_steps=n)  # the step count binds, never the clock


@pytest.fixture(scope="module")
def phantom():
    """(noisy subject, noise-free T2w) of a lesion-free 4 mm phantom, MR at SNR 5, cut to six slices."""
    noisy = make_subject(2001, spacing_mm=4.0, contrasts=("T2w", "CT"), snr=5.0, n_lesions=0)
    clean = make_subject(2001, spacing_mm=4.0, contrasts=("T2w",), snr=1e6, n_lesions=0)
    return noisy, clean.volumes["T2w"]


def cut(volume: Volume) -> Volume:
    return volume.with_array(np.ascontiguousarray(volume.array[SLICES]))


def rmse(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[mask] - b[mask]) ** 2)))


# --- phantoms ------------------------------------------------------------------------------------------------------
def test_pet_phantom_is_poisson_around_blurred_uptake(phantom):
    subject, _ = phantom
    grid = subject.volumes["T2w"]
    noisy, reference = simulate_pet(subject.tissues, grid, seed=3, counts_per_suv=10.0)
    again, _ = simulate_pet(subject.tissues, grid, seed=3, counts_per_suv=10.0)
    assert noisy.same_geometry(grid) and reference.same_geometry(grid)
    assert noisy.metadata["modality"] == "PT" and noisy.metadata["units"] == "SUV"
    assert np.array_equal(noisy.array, again.array) and noisy.array.min() >= 0
    brain = reference.array > 2.0
    residual = noisy.array[brain] - reference.array[brain]
    assert abs(residual.mean()) < 0.02 * reference.array[brain].mean()  # unbiased counts
    # Poisson: variance = mean / counts_per_suv, so the normalised residual has unit variance
    assert 0.9 < np.var(residual * np.sqrt(10.0 / reference.array[brain])) < 1.1
    gm = subject.tissues[TISSUES.index("gm")] > 0.9
    wm = subject.tissues[TISSUES.index("wm")] > 0.9
    assert reference.array[gm].mean() > 1.5 * reference.array[wm].mean()  # FDG: grey matter hotter
    assert reference.array.max() < UPTAKE_SUV["gm"]  # the scanner's blur lowers the peaks


def test_ultrasound_phantom_is_rayleigh_speckle_on_echogenicity(phantom):
    subject, _ = phantom
    grid = subject.volumes["T2w"]
    speckled, expected = simulate_ultrasound(subject.tissues, grid, seed=2)
    assert speckled.same_geometry(grid) and speckled.metadata["modality"] == "US"
    assert np.array_equal(speckled.array, simulate_ultrasound(subject.tissues, grid, seed=2)[0].array)
    tissue = expected.array > 30
    ratio = speckled.array[tissue] / expected.array[tissue]
    assert abs(ratio.mean() - 1) < 0.03  # the reference is the mean envelope
    assert abs(ratio.std() - np.sqrt(4 / np.pi - 1)) < 0.05  # Rayleigh: std / mean = 0.52
    n = (speckled.array - expected.array) * tissue
    lag1 = np.corrcoef(n[:, :, :-1][tissue[:, :, 1:] & tissue[:, :, :-1]],
                       n[:, :, 1:][tissue[:, :, 1:] & tissue[:, :, :-1]])[0, 1]
    assert lag1 > 0.3  # speckle is correlated over the PSF
    assert RAYLEIGH_MEAN == pytest.approx(0.8862, abs=1e-4)


# --- noise models ------------------------------------------------------------------------------------------------
def test_noise_estimates_on_known_noise():
    rng = np.random.default_rng(0)
    signal = np.zeros((8, 64, 64), np.float32)
    signal[:, 16:48, 16:48] = 300.0
    magnitude = np.abs(signal + 12.0 * rng.standard_normal(signal.shape) + 12j * rng.standard_normal(signal.shape))
    assert rician_sigma(magnitude) == pytest.approx(12.0, rel=0.08)
    rate = np.full((8, 64, 64), 50.0)
    rate[:, :, 32:] = 200.0
    assert poisson_gain(3.0 * rng.poisson(rate)) == pytest.approx(3.0, rel=0.15)
    assert canonical_modality("pet") == "PT" and canonical_modality("MRI") == "MR"
    with pytest.raises(InputError, match="MR, CT, PT, US"):
        canonical_modality("XR")


@pytest.mark.parametrize("transform,constants", [("rician", {"sigma": 10.0}), ("anscombe", {"gain": 2.0}),
                                                 ("log", {"eps": 1.0}), ("identity", {})])
def test_scan_fitted_network_inverts_its_transform(transform, constants):
    """With an identity inner network the wrapper maps intensities back onto themselves (Rician: bias removed)."""
    net = ScanFittedNetwork({"name": "conv2d", "params": {"features": 4, "depth": 2}}, transform, [0.0, 5.0],
                            constants)
    torch.nn.init.zeros_(net.inner.body[-1].weight)
    torch.nn.init.zeros_(net.inner.body[-1].bias)  # conv2d's residual: the inner network is the identity
    x = torch.linspace(50.0, 500.0, 64).reshape(1, 1, 8, 8)
    y = net(x)
    if transform == "anscombe":  # the unbiased inverse differs from the algebraic one by about 1/4 count
        assert torch.allclose(y, x, atol=0.3 * constants["gain"])
    elif transform == "rician":  # a mean magnitude m comes back as the signal sqrt(m^2 - sigma^2), roughly
        assert torch.allclose(y, torch.sqrt(x ** 2 - 100.0), rtol=0.01)
    else:
        assert torch.allclose(y, x, rtol=1e-5)


@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("shape", [(16, 16), (16, 24)])
def test_blind_spot_network_never_sees_its_blind_block(radius, shape):
    torch.manual_seed(0)
    net = BlindSpotUNet(features=4, levels=2, blind_radius=radius, out_channels=2)
    x = torch.randn(1, 1, *shape, requires_grad=True)
    i, j = 7, 9
    net(x)[0, :, i, j].sum().backward()
    seen = x.grad[0, 0].abs() > 0
    assert not seen[i - radius:i + radius + 1, j - radius:j + radius + 1].any()
    ring = seen[i - radius - 1:i + radius + 2, j - radius - 1:j + radius + 2]
    assert ring.sum() == (2 * radius + 3) ** 2 - (2 * radius + 1) ** 2  # everything just outside it is seen


# --- the fitting loop -------------------------------------------------------------------------------------------
def test_fit_loop_counts_steps_reports_progress_and_cancels():
    calls, fractions = [], []
    losses, _, stopped = fit_steps(lambda k, f: calls.append(k) or 1.0 / (k + 1), steps(7),
                                   progress=lambda f, m: fractions.append(f))
    assert calls == list(range(7)) and len(losses) == 7 and stopped == "max_steps"
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)

    stop = threading.Event()

    def step(k, fraction):
        if k == 3:
            stop.set()
        return 1.0

    done = []
    with pytest.raises(CancelledError):
        fit_steps(lambda k, f: done.append(k) or step(k, f), steps(100), cancel=stop)
    assert done == [0, 1, 2, 3]  # checked before every step: nothing runs after the cancel
    _, _, stopped = fit_steps(lambda k, f: 1.0, FitBudget(seconds=1e-9, max_steps=10 ** 9))
    assert stopped == "time budget"
    with pytest.raises(InputError, match="budget"):
        FitBudget(seconds=0)


# --- denoising --------------------------------------------------------------------------------------------------
def test_mr_denoising_fit_lowers_its_loss_and_the_error(phantom):
    subject, clean = phantom
    noisy = cut(subject.volumes["T2w"])
    seen = []
    result = fit_denoise(noisy, budget=steps(40), seed=1, device="cpu", progress=lambda f, m: seen.append(f),
                         **TINY)
    record = result.record
    assert record.steps == 40 and record.stopped_by == "max_steps" and record.init == "scratch"
    assert record.loss_curve[-1] < record.loss_curve[0]
    assert result.volume.same_geometry(noisy) and result.volume.array.dtype == np.float32
    assert seen[-1] == pytest.approx(1.0) and max(seen) <= 1.0 and seen == sorted(seen)
    head = subject.head_mask[SLICES]
    ref = clean.array[SLICES]
    assert rmse(result.volume.array, ref, head) < 0.9 * rmse(noisy.array, ref, head)
    assert result.volume.metadata["adapt"]["steps"] == 40
    assert np.array_equal(noisy.array, subject.volumes["T2w"].array[SLICES])  # input untouched


def _modality_case(modality: str, subject, clean) -> tuple[Volume, np.ndarray, np.ndarray]:
    """(noisy input, reference, mask) of one modality on the phantom's six slices."""
    grid = cut(subject.volumes["T2w"])
    tissues = subject.tissues[:, SLICES]
    if modality == "PT":
        noisy, ref = simulate_pet(tissues, grid, seed=5, counts_per_suv=2.0, postfilter_fwhm_mm=4.0)
        return noisy, ref.array, ref.array > 0.5
    if modality == "US":
        noisy, ref = simulate_ultrasound(tissues, grid, seed=5)
        return noisy, ref.array, ref.array > 20
    if modality == "CT":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # skimage's radon: zero outside the circle
            low, full = low_dose_volume(cut(subject.volumes["CT"]), 0.004, seed=5)
        return low, full.array, full.array > -500
    return grid, clean.array[SLICES], subject.head_mask[SLICES]


@pytest.mark.parametrize("modality", ["MR", "CT", "PT", "US"])
def test_every_modality_path_reduces_noise(phantom, modality):
    noisy, ref, mask = _modality_case(modality, *phantom)
    # CT's and PET's recorrupted-to-recorrupted fits start from random weights, not from a blind baseline: more steps
    result = fit_denoise(noisy, modality, budget=steps(150 if modality in ("CT", "PT") else 40), seed=0,
                         device="cpu", **TINY)
    assert result.volume.same_geometry(noisy)
    assert result.record.details["transform"] == {"MR": "rician", "CT": "identity", "PT": "anscombe",
                                                  "US": "log"}[modality]
    assert rmse(result.volume.array, ref, mask) < rmse(noisy.array, ref, mask)


def _correlated(shape: tuple[int, ...], sd: float, seed: int) -> np.ndarray:
    """Gaussian noise smoothed in-plane by a one-pixel Gaussian (the added noise of make eval-real's CT): its
    correlation at a lag of d pixels is exp(-d^2 / 4)."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(0, 1, shape), (0, 1.0, 1.0))
    return noise * (sd / noise.std())


def test_noise_power_is_measured_on_flat_tissue_and_sampled_with_it():
    from MedGANLogic.adapt.noise import noise_power

    image = np.zeros((6, 160, 160))
    image[:, :, 80:] = 0.5  # two flat tissues: the edge between them is no noise
    image[:, 40:60, 40:60] += np.linspace(0, 0.3, 20)  # a ramp: removed by the detrending
    noisy = image + _correlated(image.shape, 0.05, seed=1)
    power = noise_power(noisy, np.ones(image.shape, bool))
    summary = power.summary()
    assert 0.04 < summary["sd"] < 0.053  # the flattest quarter: a little low, never high
    assert abs(summary["correlation_1px"] - np.exp(-0.25)) < 0.05
    assert abs(summary["correlation_2px"] - np.exp(-1.0)) < 0.08
    sample = power.sample((4, 1, 96, 96), torch.Generator().manual_seed(0)).numpy()
    assert abs(sample.std() - summary["sd"]) < 0.003
    lag1 = np.corrcoef(sample[..., 1:].ravel(), sample[..., :-1].ravel())[0, 1]
    assert abs(lag1 - summary["correlation_1px"]) < 0.03
    # white noise is measured as white
    white = noise_power(image + np.random.default_rng(2).normal(0, 0.05, image.shape), np.ones(image.shape, bool))
    assert abs(white.summary()["correlation_1px"]) < 0.08
    with pytest.raises(InputError, match="no 16x16-pixel patch"):
        noise_power(noisy, np.zeros(image.shape, bool))


def test_pet_noise_spectrum_is_a_gaussian_fitted_where_only_noise_is():
    """PET: uptake everywhere (no flat patch) blurred by a wider point spread function than the noise's; the
    Gaussian fitted at high frequencies finds the noise's width and level, where the flattest patches do not."""
    from scipy import ndimage

    from MedGANLogic.adapt.noise import gaussian_noise_power, noise_power

    rng = np.random.default_rng(4)
    shape = (6, 128, 128)
    activity = ndimage.gaussian_filter(rng.normal(0, 1, shape), (0, 2.5, 2.5))  # structure at every scale...
    activity = 0.4 * activity / activity.std()  # ...blurred by a PSF of FWHM 6 pixels
    noise = _correlated(shape, 0.05, seed=5)  # a one-pixel Gaussian: correlation exp(-1/4) at one pixel
    tissue = np.ones(shape, bool)
    summary = gaussian_noise_power(activity + noise, tissue).summary()
    assert abs(summary["sd"] / 0.05 - 1.0) < 0.1
    assert abs(summary["correlation_1px"] - np.exp(-0.25)) < 0.05
    assert abs(summary["correlation_2px"] - np.exp(-1.0)) < 0.08
    assert noise_power(activity + noise, tissue).summary()["sd"] > 1.5 * 0.05  # flattest patches: anatomy counted
    white = gaussian_noise_power(activity + rng.normal(0, 0.05, shape), tissue).summary()
    assert abs(white["correlation_1px"]) < 0.05 and abs(white["sd"] / 0.05 - 1.0) < 0.1
    with pytest.raises(InputError, match="no 16x16-pixel patch"):
        gaussian_noise_power(activity + noise, np.zeros(shape, bool))


def test_recorrupted_pairs_have_uncorrelated_noise():
    """Recorrupted-to-Recorrupted: with recorruption noise of the scan's covariance, the noise of the input and of
    the target are uncorrelated, whatever the correlation of the scan's own noise."""
    from MedGANLogic.adapt.denoise import recorrupted_pair
    from MedGANLogic.adapt.noise import noise_power

    power = noise_power(_correlated((6, 128, 128), 0.05, seed=3), np.ones((6, 128, 128), bool))
    n = power.sample((64, 1, 32, 32), torch.Generator().manual_seed(1))  # the scan's noise (clean image 0)
    z = power.sample((64, 1, 32, 32), torch.Generator().manual_seed(2))
    given, wanted = recorrupted_pair(n, z, 0.5)
    shifted = wanted.roll(1, dims=-1)  # also across neighbouring pixels
    for target in (wanted, shifted):
        cov = float((given * target).mean())
        assert abs(cov) < 0.05 * power.variance
    assert float((n * n.roll(1, dims=-1)).mean()) > 0.5 * power.variance  # the scan's noise is correlated
    assert abs(float(given.var()) / power.variance - 1.25) < 0.1  # the input carries (1 + alpha^2) of it


def test_recorruption_noise_turns_with_each_augmented_patch_so_anisotropic_noise_stays_uncorrelated():
    """Noise correlated along rows only (streaks): the sampler turns and mirrors patches, and the recorruption noise
    is turned with each one, so input and target noise stay uncorrelated; left in the scan's orientation it is not."""
    from MedGANLogic.adapt.data import PatchSampler, augment_like
    from MedGANLogic.adapt.denoise import recorrupted_pair
    from MedGANLogic.adapt.noise import NoisePower

    kernel = np.zeros((5, 5), np.float32)
    kernel[2, 1:4] = 0.05 / np.sqrt(3)  # correlated along a row: 1 px lag correlation 2/3, none along a column
    power = NoisePower(kernel=kernel, patches=1)
    scan = power.sample((4, 1, 96, 96), torch.Generator().manual_seed(0))[:, 0].numpy()  # noise only: clean = 0
    sampler = PatchSampler(scan, 32, 64, seed=1)
    x, transforms = sampler.batch_with_transforms(0)
    assert np.array_equal(x, sampler.batch(0)) and {t for t, _ in transforms} == {0, 1, 2, 3}
    z = power.sample(x.shape, torch.Generator().manual_seed(2))

    def cross(given, wanted):  # input-target noise covariance at one pixel along rows and along columns
        return max(abs(float((given * wanted.roll(1, dims=d)).mean())) for d in (-1, -2))

    turned = recorrupted_pair(torch.from_numpy(x), augment_like(z, transforms), 0.5)
    fixed = recorrupted_pair(torch.from_numpy(x), z, 0.5)
    assert cross(*turned) < 0.08 * power.variance < 0.2 * power.variance < cross(*fixed)
    # what augment_like does to each item is what the sampler did to its patch
    ramp = torch.arange(32.0 * 32).reshape(1, 1, 32, 32).repeat(len(transforms), 1, 1, 1)
    for item, (turns, mirror) in zip(augment_like(ramp, transforms), transforms):
        expected = np.rot90(ramp[0, 0].numpy(), turns)
        assert np.array_equal(item[0].numpy(), expected[:, ::-1] if mirror else expected)


def test_ct_fits_recorrupted_to_recorrupted_by_default(phantom, model_dir):
    from MedGANLogic import run

    noisy, ref, mask = _modality_case("CT", *phantom)
    fit = fit_denoise(noisy, "CT", budget=steps(3), seed=0, device="cpu", **TINY)
    save_fitted_model(fit, model_dir / "ct-fit")  # saved with its self-ensemble: the engine gives the same voxels
    again = run("denoise", noisy, model=str(model_dir / "ct-fit"), device="cpu").volume
    assert again.same_geometry(noisy) and np.allclose(again.array, fit.volume.array, atol=0.5)
    details = fit.record.details
    assert details["method"] == "r2r" and details["blind_radius"] is None and details["alpha"] == R2R_ALPHA
    assert details["network"]["name"] == "residual_unet2d" and details["noise_power"]["sd"] > 0
    assert "recorrupted-to-recorrupted" in fit.record.method
    assert fit.network.self_ensemble == details["self_ensemble"] == 8  # all eight flips and transpositions
    assert fit.card["architecture"]["params"]["self_ensemble"] == 8
    blind = fit_denoise(noisy, "CT", budget=steps(3), seed=0, device="cpu", method="blindspot", **TINY)
    assert blind.record.details["blind_radius"] == 2 and blind.record.details["noise_power"] is None
    assert blind.record.details["self_ensemble"] == 4  # the blind spot's default: the four flips
    assert fit_denoise(noisy, "MR", budget=steps(1), device="cpu", **TINY).record.details["method"] == "blindspot"
    with pytest.raises(InputError, match="blindspot, r2r"):
        fit_denoise(noisy, "CT", budget=steps(1), device="cpu", method="n2v", **TINY)
    with pytest.raises(InputError, match="adversarial term works with the blind-spot fit only"):
        fit_denoise(noisy, "CT", budget=steps(1), device="cpu", adversarial=0.01, **TINY)


def test_pet_fits_recorrupted_to_recorrupted_with_a_gaussian_spectrum_unless_its_start_is_a_blind_spot(
        phantom, model_dir):
    from MedGANLogic import run

    noisy, _, _ = _modality_case("PT", *phantom)
    fit = fit_denoise(noisy, "PT", budget=steps(2), seed=0, device="cpu", **TINY)
    details = fit.record.details
    assert details["method"] == "r2r" and details["noise_spectrum"] == "gaussian" and details["self_ensemble"] == 8
    assert details["noise_power"]["sd"] > 0 and "high frequencies" in fit.record.method
    save_fitted_model(fit, model_dir / "pt-r2r")  # the Anscombe transform and its gain travel with the weights
    again = run("denoise", noisy, model=str(model_dir / "pt-r2r"), device="cpu").volume
    assert np.allclose(again.array, fit.volume.array, rtol=1e-4, atol=1e-3 * float(np.abs(fit.volume.array).max()))
    assert fit_denoise(noisy, "CT", budget=steps(1), device="cpu", **TINY).record.details["noise_spectrum"] == \
        "flattest"
    blind = fit_denoise(noisy, "PT", budget=steps(2), seed=0, device="cpu", method="blindspot", **TINY)
    assert blind.record.details["noise_spectrum"] is None
    save_fitted_model(blind, model_dir / "pt-blind")
    again = fit_denoise(noisy, "PT", budget=steps(1), seed=0, device="cpu", init=str(model_dir / "pt-blind"), **TINY)
    assert again.record.details["method"] == "blindspot" and again.record.init != "scratch"  # the start's method
    with pytest.raises(ModelError, match="cannot start this fit"):  # asked for another method: refused clearly
        fit_denoise(noisy, "PT", budget=steps(1), device="cpu", init=str(model_dir / "pt-blind"), method="r2r",
                    **TINY)


def test_the_self_ensemble_makes_a_fitted_network_flip_equivariant():
    inner = {"name": "conv2d", "params": {"features": 4, "depth": 2}}  # a random network: orientation-bound
    x = torch.randn(1, 1, 16, 16)
    plain = ScanFittedNetwork(inner, "identity", [-1.0, 1.0])
    both = ScanFittedNetwork(inner, "identity", [-1.0, 1.0], self_ensemble=True)  # a flag: all eight
    flips = ScanFittedNetwork(inner, "identity", [-1.0, 1.0], self_ensemble=4)
    both.load_state_dict(plain.state_dict())
    flips.load_state_dict(plain.state_dict())
    assert (plain.self_ensemble, both.self_ensemble, flips.self_ensemble) == (1, 8, 4)
    transpose = lambda t: t.transpose(-1, -2)  # noqa: E731
    with torch.no_grad():
        assert not torch.allclose(plain(x.flip(-1)), plain(x).flip(-1), atol=1e-4)
        for turn in (lambda t: t.flip(-1), lambda t: t.flip(-2), transpose):  # each its own inverse
            assert torch.allclose(turn(both(turn(x))), both(x), atol=1e-5)
        for turn in (lambda t: t.flip(-1), lambda t: t.flip(-2)):
            assert torch.allclose(turn(flips(turn(x))), flips(x), atol=1e-5)
        assert not torch.allclose(transpose(flips(transpose(x))), flips(x), atol=1e-4)  # four passes: no transpose
    for bad in (3, 4.0, "4"):  # a count of passes, never rounded or parsed
        with pytest.raises(ValueError, match="self_ensemble must be one of"):
            ScanFittedNetwork(inner, "identity", [-1.0, 1.0], self_ensemble=bad)


def test_a_blind_spot_fit_averages_the_four_flips_unless_told_otherwise(phantom, model_dir):
    from MedGANLogic import run

    noisy, _, _ = _modality_case("PT", *phantom)
    blind = {"method": "blindspot", **TINY}
    fit = fit_denoise(noisy, "PT", budget=steps(2), seed=0, device="cpu", **blind)
    assert fit.network.self_ensemble == fit.record.details["self_ensemble"] == 4
    assert fit.card["architecture"]["params"]["self_ensemble"] == 4
    save_fitted_model(fit, model_dir / "pt-fit")  # the kept fit runs the same four passes in the engine
    again = run("denoise", noisy, model=str(model_dir / "pt-fit"), device="cpu").volume
    assert np.allclose(again.array, fit.volume.array, rtol=1e-4, atol=1e-3 * float(np.abs(fit.volume.array).max()))
    one = fit_denoise(noisy, "PT", budget=steps(2), seed=0, device="cpu", self_ensemble=1, **blind)
    assert one.record.details["self_ensemble"] == 1 and not np.array_equal(one.volume.array, fit.volume.array)
    with pytest.raises(InputError, match="self_ensemble must be a number of passes"):
        fit_denoise(noisy, "PT", budget=steps(1), device="cpu", self_ensemble=3, **blind)


def test_a_zero_initialised_residual_denoiser_starts_as_the_identity():
    from MedGANLogic.models.unet import ResidualUNet

    x = torch.randn(2, 1, 32, 24)
    assert torch.equal(ResidualUNet(features=8, depth=3, zero_init=True)(x), x)
    assert not torch.equal(ResidualUNet(features=8, depth=3)(x), x)


def test_cancel_during_denoising_raises_and_returns_nothing(phantom):
    noisy = cut(phantom[0].volumes["T2w"])
    stop = threading.Event()
    steps_seen = []

    def progress(fraction, message):
        if "step" in message:
            steps_seen.append(message)
            if len(steps_seen) == 3:
                stop.set()

    out = None
    with pytest.raises(CancelledError):
        out = fit_denoise(noisy, "MR", budget=steps(200), device="cpu", progress=progress, cancel=stop, **TINY)
    assert out is None and len(steps_seen) == 3  # stopped before the next step


def test_denoising_is_reproducible_with_a_seed(phantom):
    noisy = cut(phantom[0].volumes["T2w"])
    a = fit_denoise(noisy, "MR", budget=steps(5), seed=4, device="cpu", **TINY).volume.array
    b = fit_denoise(noisy, "MR", budget=steps(5), seed=4, device="cpu", **TINY).volume.array
    c = fit_denoise(noisy, "MR", budget=steps(5), seed=5, device="cpu", **TINY).volume.array
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_denoising_needs_a_known_modality(phantom):
    noisy = cut(phantom[0].volumes["T2w"])
    unknown = Volume(noisy.array, noisy.spacing)
    with pytest.raises(InputError, match="modality"):
        fit_denoise(unknown, budget=steps(1))


# --- super-resolution -------------------------------------------------------------------------------------------
def test_superres_fit_gives_the_finer_grid_over_the_same_field_of_view(phantom, oblique_volume):
    thick = thick_slices(phantom[0].volumes["T2w"].with_array(phantom[0].volumes["T2w"].array[16:32]), 2, axis=0)
    result = fit_superres(thick, budget=steps(30), seed=0, device="cpu", init=None, **TINY)
    grid = thick.resampled_grid((2.0, 1.0, 1.0))
    assert result.volume.shape == grid["shape"] == (16, *thick.shape[1:])
    assert np.allclose(result.volume.spacing, grid["spacing"]) and np.allclose(result.volume.origin, grid["origin"])
    assert np.allclose(result.volume.physical_extent(), thick.physical_extent())
    assert result.record.loss_curve[-1] < result.record.loss_curve[0] and result.record.steps == 30
    assert result.record.details["factor"] == 2 and result.record.details["scaled_axis"] == 0
    assert result.record.details["lr"] == SR_LR  # recorded
    # an oblique scan whose slice axis is along x (array axis 2): factor 4, direction kept
    oblique = oblique_volume.with_array(np.ascontiguousarray(oblique_volume.array.transpose(2, 1, 0)),
                                        spacing=oblique_volume.spacing[::-1])
    out = fit_superres(oblique, budget=steps(2), device="cpu", init=None, **TINY).volume
    grid = oblique.resampled_grid((1.0, 1.0, 4.0))
    assert out.shape == grid["shape"] and np.allclose(out.direction, oblique.direction)
    assert np.allclose(out.origin, grid["origin"]) and np.allclose(out.spacing, grid["spacing"])


def test_superres_refuses_a_nearly_isotropic_scan(phantom):
    with pytest.raises(InputError, match="thick-slice"):
        fit_superres(cut(phantom[0].volumes["T2w"]), budget=steps(1))


def test_adversarial_terms_run(phantom):
    noisy = cut(phantom[0].volumes["T2w"])
    result = fit_denoise(noisy, "MR", budget=steps(6), device="cpu", adversarial=0.01, **TINY)
    assert np.isfinite(result.volume.array).all() and "adversarial" in result.record.method
    thick = thick_slices(phantom[0].volumes["T2w"].with_array(phantom[0].volumes["T2w"].array[16:28]), 2, axis=0)
    sr = fit_superres(thick, budget=steps(4), device="cpu", init=None, adversarial=0.01, **TINY)
    assert np.isfinite(sr.volume.array).all() and "adversarial" in sr.record.method


# --- fitted models ----------------------------------------------------------------------------------------------
def test_a_saved_fit_runs_through_the_engine_and_starts_a_new_fit(phantom, model_dir):
    from MedGANLogic import run

    noisy = cut(phantom[0].volumes["T2w"])
    result = fit_denoise(noisy, "MR", budget=steps(5), device="cpu", **TINY)
    card = save_fitted_model(result, model_dir / "my-fit")
    fitted_on = card.extras["fitted_on"]
    assert card.task == "denoise" and fitted_on["modality"] == "MR" and len(fitted_on["voxels_sha256"]) == 64
    assert card.extras["fit"]["steps"] == 5 and "one scan" in card.data["training_data"]
    again = run("denoise", noisy, model=str(model_dir / "my-fit"), device="cpu").volume
    assert again.same_geometry(noisy)
    assert np.allclose(again.array, result.volume.array, atol=1e-3 * float(np.ptp(noisy.array)))
    second = fit_denoise(noisy, "MR", budget=steps(2), device="cpu", init=str(model_dir / "my-fit"), **TINY)
    assert second.record.init == card.id

    thick = thick_slices(phantom[0].volumes["T2w"].with_array(phantom[0].volumes["T2w"].array[16:28]), 2, axis=0)
    sr = fit_superres(thick, budget=steps(2), device="cpu", init=None, **TINY)
    sr_card = save_fitted_model(sr, model_dir / "my-sr")
    assert sr_card.scale_factor == (2.0, 1.0, 1.0)
    out = run("superres", thick, model=str(model_dir / "my-sr"), device="cpu").volume
    assert out.shape == sr.volume.shape and np.allclose(out.origin, sr.volume.origin)
    tuned = fit_superres(thick, budget=steps(1), device="cpu", init=str(model_dir / "my-sr"), lr=1e-4, **TINY)
    assert tuned.record.init == sr_card.id and tuned.record.details["lr"] == 1e-4
    with pytest.raises(InputError, match="learning rate"):
        fit_superres(thick, budget=steps(1), device="cpu", init=None, lr=-1.0, **TINY)


def test_a_fit_started_from_a_pretrained_model_maps_intensities_as_that_model_learned(phantom):
    """The shipped mr-sr-x2-throughplane learned on the zero-based MR scale: a fit that starts from it maps the scan
    the same way (0 -> -1), not with the clipped percentile window a fit from scratch uses for MR."""
    from MedGANLogic.adapt.superres import _window
    from MedGANLogic.models.registry import get_model
    from MedGANLogic.normalization import intensity_window

    t2 = phantom[0].volumes["T2w"]
    thick = thick_slices(t2.with_array(t2.array[16:28]), 2, axis=0)
    thick = thick.with_array(thick.array, metadata={"modality": "MR"})
    spec = get_model("mr-sr-x2-throughplane").input["normalization"]
    assert spec.get("zero_based") is True
    started = fit_superres(thick, budget=steps(1), device="cpu", init="mr-sr-x2-throughplane")
    assert started.record.init == "mr-sr-x2-throughplane"
    assert started.record.details["window"] == [0.0, intensity_window(thick.array, spec)["high"]]
    assert _window(thick.array, "MR")[0] > 0.0  # from scratch: the engine's clipped MR window


# --- through the engine: plan, execute, run, CLI ----------------------------------------------------------------
def test_run_with_adapt_fits_then_applies_and_records_the_fit(phantom, model_dir):
    from MedGANLogic import run

    subject, _ = phantom
    noisy, _ = simulate_pet(subject.tissues[:, SLICES], cut(subject.volumes["T2w"]), seed=1, counts_per_suv=3.0)
    seen = []
    result = run("denoise", noisy, device="cpu", progress=lambda f, m: seen.append((f, m)), adapt=True,
                 adapt_steps=6, adapt_budget_s=600)
    out = result.volume
    assert out.same_geometry(noisy) and out.metadata["modality"] == "PT" and out.metadata["synthetic"]
    fit = result.provenance["adapt"]
    assert fit["steps"] == 6 and fit["stopped_by"] == "max_steps" and fit["seed"] == 0
    assert fit["details"]["modality"] == "PT" and out.metadata["provenance"]["adapt"] == fit
    assert result.provenance["model"] == "fitted to this scan"
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    fitting = [i for i, (_, m) in enumerate(seen) if m.startswith("fitting")]
    slices = [i for i, (_, m) in enumerate(seen) if "slices" in m]
    assert fitting and slices and max(fitting) < min(slices)  # the bar covers the fit, then the pass


def test_plan_checks_a_fit_before_any_work(phantom, model_dir):
    from MedGANLogic.pipeline import plan

    noisy = cut(phantom[0].volumes["T2w"])
    with pytest.raises(InputError, match="Unknown option.*adapt"):  # only denoise and superres take it
        plan("synthesize", noisy, adapt=True)
    with pytest.raises(InputError, match="modality"):
        plan("denoise", Volume(noisy.array, noisy.spacing), adapt=True)
    with pytest.raises(InputError, match="slice_axis"):
        plan("denoise", noisy, adapt=True, slice_axis=0)
    with pytest.raises(InputError, match="thick slices"):
        plan("superres", noisy, adapt=True)
    with pytest.raises(InputError, match="adapt_budget_s"):
        plan("denoise", noisy, adapt=True, adapt_budget_s=-1)
    ok = plan("denoise", noisy, adapt=True, modality="US", adapt_budget_s=30)
    assert ok.card is None and ok.adapt.modality == "US" and ok.adapt.budget.seconds == 30
    assert "fitting a US denoiser" in ok.notes[0]


def test_default_fits_of_correlated_noise_stop_at_their_step_cap(phantom, model_dir, monkeypatch):
    """PET, ultrasound and CT fits stop at STEP_CAP steps however much time is left (a longer blind-spot fit learns
    their correlated noise; CT's thousands of steps bound the time); MR's time budget alone binds; an explicit step
    count or budget is taken as given; CT's default seconds are its own."""
    from MedGANLogic.adapt.denoise import DEFAULT_SECONDS, STEP_CAP, default_budget
    from MedGANLogic.adapt.engine import MAX_STEPS
    from MedGANLogic.pipeline import plan

    noisy = cut(phantom[0].volumes["T2w"])
    for modality in ("PT", "US", "CT"):
        capped = plan("denoise", noisy, adapt=True, modality=modality, adapt_budget_s=600)
        assert capped.adapt.budget.max_steps == STEP_CAP[modality] < MAX_STEPS
        assert capped.adapt.budget.seconds == 600 and f"or {STEP_CAP[modality]} steps" in capped.notes[0]
        assert default_budget(modality).max_steps == STEP_CAP[modality]
    assert plan("denoise", noisy, adapt=True, modality="MR").adapt.budget.max_steps == MAX_STEPS
    ct = plan("denoise", noisy, adapt=True, modality="CT").adapt.budget
    import MedGANLogic.adapt.starts as starts

    monkeypatch.setattr(starts, "start_folder", lambda modality, root=None: model_dir / f"start-{modality}")
    for modality in ("CT", "PT"):  # no blind-spot start for r2r
        assert plan("denoise", noisy, adapt=True, modality=modality).adapt.start is None
    assert plan("denoise", noisy, adapt=True, modality="US").adapt.start == model_dir / "start-US"
    monkeypatch.undo()
    assert ct.seconds == DEFAULT_SECONDS["CT"] > DEFAULT_SECONDS["MR"] == 90
    assert plan("denoise", noisy, adapt=True, modality="CT", adapt_budget_s=45).adapt.budget.seconds == 45
    assert plan("denoise", noisy, adapt=True, modality="PT", adapt_steps=900).adapt.budget.max_steps == 900
    monkeypatch.setitem(STEP_CAP, "US", 4)  # a short cap: the fit below stays quick
    fit = fit_denoise(noisy, "US", budget=steps(STEP_CAP["US"] + 2), device="cpu", **TINY)
    assert fit.record.steps == STEP_CAP["US"] + 2  # an explicit budget is not capped


def test_cancel_through_the_engine_leaves_nothing(phantom, model_dir):
    from MedGANLogic.pipeline import execute, plan

    noisy = cut(phantom[0].volumes["T2w"])
    the_plan = plan("denoise", noisy, device="cpu", adapt=True, adapt_steps=500)
    stop = threading.Event()
    with pytest.raises(CancelledError):
        execute(the_plan, progress=lambda f, m: stop.set() if "step 2" in m else None, cancel=stop)


def test_cli_adapt_writes_the_finer_grid_and_the_fitted_model(phantom, model_dir, tmp_path):
    from MedGANLogic.cli import main
    from MedGANLogic.io import read_volume, write_volume

    t2 = phantom[0].volumes["T2w"]
    thick = thick_slices(t2.with_array(np.ascontiguousarray(t2.array[16:28])), 2, axis=0)
    write_volume(thick, tmp_path / "thick.nii.gz")
    code = main(["run", "--task", "superres", "--adapt", "--adapt-steps", "2", "--device", "cpu", "--quiet",
                 "--input", str(tmp_path / "thick.nii.gz"), "--output", str(tmp_path / "sr.nii.gz"),
                 "--save-fit", str(tmp_path / "fit")])
    assert code == 0
    out = read_volume(tmp_path / "sr.nii.gz")
    grid = read_volume(tmp_path / "thick.nii.gz").resampled_grid((2.0, 1.0, 1.0))
    assert out.shape == grid["shape"] and np.allclose(out.spacing, grid["spacing"], atol=1e-5)
    assert np.allclose(out.origin, grid["origin"], atol=1e-4)
    assert (tmp_path / "fit" / "card.json").is_file() and (tmp_path / "fit" / "weights.safetensors").is_file()


def test_the_blind_spot_loss_stays_finite_where_a_pixel_is_predicted_exactly():
    """A network that predicts a pixel exactly can drive its log-variance down without end; the loss, and its
    gradient, stay finite (an MR fit on an H200 diverged with an infinite loss before the bound)."""
    from MedGANLogic.adapt.denoise import MIN_LOG_VAR, gaussian_nll

    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0, 0] = 0.5
    prediction = torch.zeros(2, 2, 4, 4)
    prediction[:, 1] = -200.0  # exp(200) overflows float32
    prediction.requires_grad_(True)
    loss = gaussian_nll(x, prediction)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(prediction.grad).all()
    normal = torch.cat([torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), -5.0)], dim=1)  # above the bound: as before
    assert gaussian_nll(x, normal).item() == pytest.approx(
        (0.5 * ((x - normal[:, :1]) ** 2 * np.exp(5.0) - 5.0)).mean().item(), rel=1e-6)
    assert MIN_LOG_VAR == pytest.approx(np.log(1e-8))


def _tiny_ct_denoiser(model_id: str = "test-ct-denoiser", kind: str = "ct_window") -> dict:
    from conftest import tiny_card

    norm = ({"kind": "ct_window", "window": [-1000, 2000], "range": [-1, 1]} if kind.startswith("ct_window")
            else {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]})
    if kind == "ct_window_knots":
        norm["knots"] = [[-1000, -1], [0, 0], [2000, 1]]
    return tiny_card(model_id, task="denoise", architecture={"name": "conv2d", "params": {"features": 4, "depth": 2}},
                     input={"modality": "CT" if kind.startswith("ct_window") else "MR", "normalization": norm},
                     output={"modality": "CT", "units": "HU", "normalization": {"kind": "same_as_input"}})


def test_a_ct_fit_fine_tunes_the_trained_ct_denoiser_when_it_is_installed(phantom, make_model, model_dir,
                                                                           monkeypatch):
    """CT's default fit (recorrupted-to-recorrupted) starts from the modality's trained denoiser when installed
    (TRAINED_START): its network, its weights and its HU window, at the fine-tuning learning rate; a trained MR-scale
    denoiser cannot start one, nor can a CT denoiser start a fit of another modality or method."""
    import MedGANLogic.adapt.denoise as dn
    from MedGANLogic import run
    from MedGANLogic.models import build_network
    from MedGANLogic.models.registry import get_model
    from MedGANLogic.pipeline import plan

    noisy, _, _ = _modality_case("CT", *phantom)
    card = make_model(_tiny_ct_denoiser())
    make_model(_tiny_ct_denoiser("test-mr-scale-denoiser", kind="mr"))
    assert dn.trained_window(card) == (-1000.0, 2000.0)
    assert dn.trained_window(get_model("test-mr-scale-denoiser")) is None
    make_model(_tiny_ct_denoiser("test-knotted-denoiser", kind="ct_window_knots"))
    assert dn.trained_window(get_model("test-knotted-denoiser")) is None  # recorruption needs a linear HU window
    assert plan("denoise", noisy, adapt=True, modality="CT").adapt.start is None  # not the default start
    monkeypatch.setitem(dn.TRAINED_START, "CT", "test-ct-denoiser")
    planned = plan("denoise", noisy, adapt=True, modality="CT")
    assert planned.adapt.start == "test-ct-denoiser" and "fine-tuning the trained test-ct-denoiser" in planned.notes[0]
    assert planned.adapt.budget.max_steps == dn.R2R_FINETUNE_STEPS < dn.STEP_CAP["CT"]  # it arrives sooner
    assert plan("denoise", noisy, adapt=True, modality="CT", adapt_steps=9).adapt.budget.max_steps == 9
    given = plan("denoise", noisy, adapt=True, modality="CT", model="test-ct-denoiser")
    assert given.adapt.start == "test-ct-denoiser" and given.adapt.budget.max_steps == dn.R2R_FINETUNE_STEPS
    assert plan("denoise", noisy, adapt=True, modality="PT").adapt.start is None  # CT's only

    fit = fit_denoise(noisy, "CT", init="test-ct-denoiser", budget=steps(2), seed=0, device="cpu", patch=32,
                      batch_size=4)
    details = fit.record.details
    assert fit.record.init == "test-ct-denoiser" and details["method"] == "r2r"
    assert details["network"] == card.data["architecture"] and details["window"] == [-1000.0, 2000.0]
    assert details["lr"] == dn.R2R_FINETUNE_LR and "fine-tuning the trained test-ct-denoiser" in fit.record.method
    torch.manual_seed(0)  # make_model's weights
    trained = build_network("conv2d", {"features": 4, "depth": 2})
    moved = max(float((a - b).abs().max()) for a, b in zip(fit.network.inner.state_dict().values(),
                                                           trained.state_dict().values()))
    assert moved < 10 * dn.R2R_FINETUNE_LR  # two Adam steps from the trained weights, not a fresh network
    torch.manual_seed(1)
    fresh = build_network("conv2d", {"features": 4, "depth": 2})
    assert max(float((a - b).abs().max()) for a, b in zip(fresh.state_dict().values(),
                                                          trained.state_dict().values())) > 100 * dn.R2R_FINETUNE_LR
    save_fitted_model(fit, model_dir / "ct-fine-tuned")  # a kept fine-tuned fit runs as a model of its own
    again = run("denoise", noisy, model=str(model_dir / "ct-fine-tuned"), device="cpu").volume
    assert again.same_geometry(noisy) and np.allclose(again.array, fit.volume.array, atol=0.5)
    refit = fit_denoise(noisy, "CT", init=str(model_dir / "ct-fine-tuned"), budget=steps(1), seed=0, device="cpu",
                        patch=32, batch_size=4)  # a kept fine-tuned fit starts another: same network and window
    assert refit.record.details["network"] == card.data["architecture"]
    assert refit.record.details["window"] == [-1000.0, 2000.0] and refit.record.details["method"] == "r2r"
    through_engine = run("denoise", noisy, adapt=True, modality="CT", adapt_steps=2, adapt_seed=0, device="cpu")
    assert through_engine.volume.same_geometry(noisy, atol=0)
    assert through_engine.provenance["adapt"]["init"] == "test-ct-denoiser"
    with pytest.raises(InputError, match="starts a recorrupted-to-recorrupted fit to a CT scan only"):
        fit_denoise(noisy, "MR", init="test-ct-denoiser", budget=steps(1), device="cpu")
    with pytest.raises(InputError, match="starts a recorrupted-to-recorrupted fit to a CT scan only"):
        fit_denoise(noisy, "CT", init="test-ct-denoiser", method="blindspot", budget=steps(1), device="cpu")
    with pytest.raises(ModelError, match="cannot start a denoise fit"):
        plan("denoise", noisy, adapt=True, modality="CT", model="test-mr-scale-denoiser")
    with pytest.raises(InputError, match="starts a fit to a CT scan only, and this one is MR"):  # before any work
        plan("denoise", noisy, adapt=True, modality="MR", model="test-ct-denoiser")


# --- in-plane super-resolution: a trained in-plane model fine-tuned on the scan -------------------------------------
def test_an_isotropic_scan_fits_the_installed_in_plane_model_and_runs_it_as_trained(phantom, make_model, model_dir):
    """No thick slices: adapt=True fine-tunes the installed in-plane model on the scan's own pairs, then runs it as
    the trained model runs (same grid, kept measured data); the fit is recorded, changes the output, saves as a model
    that gives the same output through the engine and starts a later fit."""
    from MedGANLogic import run

    card = make_model(tiny_inplane_card())
    t2 = cut(phantom[0].volumes["T2w"])
    t2 = t2.with_array(t2.array, metadata={"modality": "MR"})
    before = t2.array.copy()
    trained = run("superres", t2, model=card.id, device="cpu", precision="fp32")
    fitted = run("superres", t2, device="cpu", adapt=True, adapt_steps=3)
    assert np.array_equal(t2.array, before)  # the input is never modified
    out = fitted.volume
    assert out.same_geometry(trained.volume) and out.shape == (t2.shape[0], 2 * t2.shape[1], 2 * t2.shape[2])
    assert not np.allclose(out.array, trained.volume.array)  # the fit changed the network
    fit = fitted.provenance["adapt"]
    assert fit["init"] == card.id and fit["steps"] == 3 and "in-plane" in fit["method"]
    assert fit["details"]["degradation"] == "kspace_truncate" and fit["details"]["start_sha256"] == card.sha256
    assert fitted.provenance["model"] == "fitted to this scan" and out.metadata["synthetic"]
    assert fitted.provenance.get("consistency") == trained.provenance.get("consistency")  # data kept alike
    saved = save_fitted_model(fitted.extras["fitted"], model_dir / "my-inplane")
    assert saved.architecture == "srresnet2d" and saved.extras["fitted_on"]["modality"] == "MR"
    assert saved.extras["degradation"] == "kspace_truncate" and "one scan" in saved.data["training_data"]
    again = run("superres", t2, model=str(model_dir / "my-inplane"), device="cpu", precision="fp32").volume
    assert np.allclose(again.array, out.array, atol=1e-3 * float(np.ptp(out.array)))
    second = run("superres", t2, model=str(model_dir / "my-inplane"), device="cpu", adapt=True, adapt_steps=1)
    assert second.provenance["adapt"]["init"] == saved.id


def test_an_inplane_fit_learns_the_scans_pairs_and_is_seeded(phantom, make_model, model_dir):
    from MedGANLogic.adapt.inplane import fit_inplane
    from MedGANLogic.pipeline import plan

    card = make_model(tiny_inplane_card())
    t2 = cut(phantom[0].volumes["T2w"])
    the_plan = plan("superres", t2, model=card.id, device="cpu", precision="fp32")
    first = fit_inplane(the_plan, budget=steps(40), seed=3, lr=3e-3)
    curve = first[2].record.loss_curve
    assert curve[-1] < curve[0] and first[2].record.details["lr"] == 3e-3
    again = fit_inplane(the_plan, budget=steps(40), seed=3, lr=3e-3)
    assert np.array_equal(first[0]["image"].array, again[0]["image"].array)


def test_a_thick_slice_scan_fits_in_plane_when_given_an_in_plane_model(phantom, make_model, model_dir):
    from MedGANLogic.adapt.inplane import DEFAULT_STEPS
    from MedGANLogic.pipeline import plan

    card = make_model(tiny_inplane_card())
    t2 = phantom[0].volumes["T2w"]
    thick = thick_slices(t2.with_array(np.ascontiguousarray(t2.array[16:28])), 2, axis=0)
    with pytest.raises(InputError, match="thick slices"):  # no model given, no installed through-plane start
        plan("superres", cut(t2).with_array(cut(t2).array, metadata={"modality": "CT"}), adapt=True)
    planned = plan("superres", thick, model=card.id, adapt=True)
    assert planned.adapt.inplane and planned.adapt.start == card.id and planned.adapt.trained.card.id == card.id
    assert planned.adapt.budget.max_steps == DEFAULT_STEPS and "fine-tuned on the scan" in planned.notes[0]
    assert plan("superres", thick, model=card.id, adapt=True, adapt_steps=7).adapt.budget.max_steps == 7
    assert not plan("superres", thick, adapt=True).adapt.inplane  # thick slices, no model: through-plane


def test_cancel_during_an_in_plane_fit_raises_and_returns_nothing(phantom, make_model, model_dir):
    from MedGANLogic.pipeline import execute, plan

    make_model(tiny_inplane_card())
    the_plan = plan("superres", cut(phantom[0].volumes["T2w"]), device="cpu", adapt=True, adapt_steps=500)
    assert the_plan.adapt.inplane
    stop = threading.Event()
    with pytest.raises(CancelledError):
        execute(the_plan, progress=lambda f, m: stop.set() if "step 2" in m else None, cancel=stop)
