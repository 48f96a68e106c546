"""Domain-randomised generator: ranges respected, seeds reproducible, targets physical, real CT when cached."""

import dataclasses
import types

import numpy as np
import pytest
import torch
from scipy import ndimage

from MedGANLogic.errors import InputError
from MedGANLogic.simulate import mri, real_ct
from MedGANLogic.simulate.acquisition import acquire, fourier_resample, motion_artifact, to_grid
from MedGANLogic.simulate.anatomy import sample_anatomy
from MedGANLogic.simulate.appearance import random_mr_contrast
from MedGANLogic.simulate.lowres import kspace_truncate, thick_slices
from MedGANLogic.simulate.randomize import DomainRandomizer, DomainRanges, random_sample
from MedGANLogic.simulate.tissue import CSF, GM, TISSUES, WM
from MedGANLogic.volume import Volume

SHAPE = (20, 40, 40)  # 2 mm voxels: a 40 x 80 x 80 mm box in the middle of the head
QUIET = DomainRanges(partial_fov=0.0, motion=0.0)


@pytest.fixture(scope="module")
def anatomy():
    return sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2)), SHAPE, 2.0)


# --- the table -----------------------------------------------------------------------------------------------------
def test_ranges_table_rejects_bad_values_and_names_the_known_ones():
    with pytest.raises(InputError, match="snr must be"):
        DomainRanges(snr=(60.0, 3.0))
    with pytest.raises(InputError, match="Unknown domain range.*snr_db.*known:.*slice_mm"):
        DomainRanges.from_dict({"snr_db": [1, 2]})
    assert DomainRanges.from_dict({"slice_mm": [2, 4]}).slice_mm == (2, 4)
    with pytest.raises(InputError, match="face is a probability"):
        DomainRanges(face=1.5)
    with pytest.raises(InputError, match="Unknown task"):
        random_sample("segmentation", np.random.default_rng(0))


# --- acquisition -----------------------------------------------------------------------------------------------------
def test_acquisition_at_integer_factors_is_the_projects_sr_degradation():
    v = Volume(np.random.default_rng(0).random((12, 10, 8)).astype(np.float32) + 1, spacing=(1.0, 1.0, 1.5),
               origin=(1.0, 2.0, 3.0))
    box, ref = acquire(v, (4.5, 1, 1), slice_axis=0, profile="box"), thick_slices(v, 3, axis=0)
    assert box.same_geometry(ref) and np.abs(box.array - ref.array).max() < 1e-5
    k, ref = acquire(v, (1.5, 2, 2), slice_axis=0), kspace_truncate(v, 2, (1, 2))
    assert k.same_geometry(ref) and np.abs(k.array - ref.array).max() < 1e-5


def test_acquisition_keeps_the_field_of_view_at_any_spacing_and_profile():
    v = Volume(np.ones((30, 32, 28), np.float32), spacing=(1.0, 1.0, 1.0))
    for spacing, profile, thickness in (((7.0, 1.3, 2.9), "gaussian", 5.0), ((2.2, 0.5, 3.0), "box", 3.0),
                                        ((4.0, 1.0, 1.0), "kspace", None)):
        out = acquire(v, spacing, slice_axis=0, profile=profile, thickness_mm=thickness)
        assert np.allclose(out.physical_extent(), v.physical_extent())
        got = np.array(out.spacing[::-1])
        assert np.all(got >= np.maximum(spacing, 1.0) * 0.85) and np.all(got <= np.maximum(spacing, 1.0) * 1.15)
        assert np.allclose(out.array, 1.0, atol=1e-4)  # a uniform object stays uniform (mean kept)
        assert np.allclose(to_grid(out, v), 1.0, atol=1e-4)
    with pytest.raises(InputError, match="profile"):
        acquire(v, (2, 2, 2), profile="triangle")
    assert fourier_resample(v.array, {1: 32}).shape == v.shape


def test_motion_blurs_along_phase_encoding_and_none_leaves_the_image():
    a = np.zeros((4, 32, 32), np.float32)
    a[:, 12:20, 12:20] = 1
    rng = np.random.default_rng(1)
    moved, info = motion_artifact(a, rng, (1.0, 1.0, 1.0), max_shift_mm=3.0)
    assert info["max_shift_mm"] == 3.0 and np.abs(moved - a).mean() > 0.01
    still, _ = motion_artifact(a, rng, (1.0, 1.0, 1.0), max_shift_mm=0.0)
    assert np.array_equal(still, a)


# --- anatomy -------------------------------------------------------------------------------------------------------
def test_anatomy_fractions_sum_to_one_and_lesions_match_their_labels(anatomy):
    f = anatomy.fractions
    assert f.shape == (len(TISSUES),) + SHAPE and f.min() >= 0 and np.abs(f.sum(axis=0) - 1).max() < 1e-5
    assert np.abs(anatomy.healthy.sum(axis=0) - 1).max() < 1e-5
    lesion = f[TISSUES.index("lesion")]
    assert np.array_equal(lesion > 0, anatomy.lesion_labels > 0) and len(anatomy.lesions) >= 1
    assert anatomy.grid.spacing == (2.0, 2.0, 2.0) and anatomy.brain_mask.mean() > 0.5


def test_ventricles_grow_and_shrink_with_their_range():
    def csf_ml(change):
        ranges = DomainRanges(ventricle_mm=(change, change), n_lesions=(0, 0), folding_amplitude=(0.0, 0.0))
        return float(sample_anatomy(np.random.default_rng(3), ranges, SHAPE, 2.0).fractions[CSF].sum()) * 8e-3

    small, none, large = csf_ml(-2.0), csf_ml(0.0), csf_ml(5.0)
    assert small < none < large and large > 1.5 * none


# --- appearance ----------------------------------------------------------------------------------------------------
def test_contrast_orderings_stay_physical():
    physics = DomainRanges(mean_jitter=0.0)
    rng = np.random.default_rng(0)
    order = {"T1w": ("wm", "gm", "csf"), "T2w": ("csf", "gm", "wm")}
    for _ in range(30):
        for ordering, chain in order.items():
            m = random_mr_contrast(ordering, rng, physics)["means"]
            assert all(m[a] > m[b] for a, b in zip(chain, chain[1:])), (ordering, m)
        pd = [random_mr_contrast("PD", rng, physics)["means"][t] for t in ("csf", "gm", "wm")]
        assert max(pd) < 1.6 * min(pd)  # proton density: little contrast
        flair = random_mr_contrast("FLAIR", rng, physics)["means"]
        assert flair["csf"] < 0.4 * min(flair["gm"], flair["wm"])  # CSF near its null (TI drawn +-10 %)
    held = [random_mr_contrast("T2w", rng, DomainRanges())["means"] for _ in range(100)]  # with the mixture
    assert np.mean([m["csf"] > m["gm"] > m["wm"] for m in held]) > 0.85
    assert len({round(m["gm"], 3) for m in held}) == 100  # random means: no lookup table


# --- samples -------------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_sample(anatomy):
    a = DomainRandomizer(7, shape=SHAPE).sample("synthesize", 0, anatomy=anatomy)
    b = DomainRandomizer(7, shape=SHAPE).sample("synthesize", 0, anatomy=anatomy)
    c = DomainRandomizer(7, shape=SHAPE).sample("synthesize", 1, anatomy=anatomy)
    d = DomainRandomizer(8, shape=SHAPE).sample("synthesize", 0, anatomy=anatomy)
    for key in ("input", "target", "labels"):
        assert np.array_equal(a[key].array, b[key].array)
    assert a["meta"] == b["meta"]
    assert not np.array_equal(a["input"].array, c["input"].array)
    assert not np.array_equal(a["input"].array, d["input"].array)
    e = random_sample("anomaly", np.random.default_rng([9, 0]), ranges=QUIET, shape=SHAPE)
    f = random_sample("anomaly", np.random.default_rng([9, 0]), ranges=QUIET, shape=SHAPE)
    assert np.array_equal(e["input"].array, f["input"].array) and e["meta"]["anatomy"] == f["meta"]["anatomy"]


def test_targets_are_physical_whatever_the_input_looks_like(anatomy):
    samples = [random_sample("synthesize", np.random.default_rng(s), ranges=QUIET, anatomy=anatomy, source="any",
                             target="T2w") for s in (1, 2)]
    assert not np.allclose(samples[0]["input"].array, samples[1]["input"].array)
    assert np.array_equal(samples[0]["target"].array, samples[1]["target"].array)
    t2 = samples[0]["target"].array
    for tissue in ("csf", "gm", "wm"):
        pure = anatomy.fractions[TISSUES.index(tissue)] > 0.9999
        expected = mri.tissue_signal("T2w", *mri.TISSUE_PARAMS[tissue]) * mri.SIGNAL_SCALE
        assert pure.any() and np.allclose(t2[pure], expected, rtol=1e-3), tissue
    ct = random_sample("synthesize", np.random.default_rng(3), ranges=QUIET, anatomy=anatomy, target="CT")
    for index, hu in ((CSF, 15.0), (GM, 40.0), (WM, 30.0)):
        pure = anatomy.fractions[index] > 0.9999
        assert np.allclose(ct["target"].array[pure], hu, atol=0.1)
    assert ct["target"].metadata["units"] == "HU" and ct["labels"].array.max() == TISSUES.index("lesion")


def test_mr_noise_is_rician_at_the_drawn_snr(anatomy):
    ranges = dataclasses.replace(QUIET, snr=(30.0, 30.0), inplane_mm=(2.0, 2.0), slice_mm=(4.0, 4.0))
    s = random_sample("denoise", np.random.default_rng(4), ranges=ranges, anatomy=anatomy)
    acq = s["meta"]["acquisition"]
    assert acq["snr"] == pytest.approx(30.0) and acq["brain_signal"] / acq["noise_sigma"] == pytest.approx(30, 0.01)
    noisy, clean = s["input"].array, s["target"].array
    bright = clean > 5 * acq["noise_sigma"]
    assert bright.mean() > 0.3
    measured = float(np.std(noisy[bright] - clean[bright]))
    assert measured == pytest.approx(acq["noise_sigma"], rel=0.1)
    assert s["input"].spacing[2 - acq["slice_axis"]] == pytest.approx(4.0, rel=0.15)
    draws = [random_sample("denoise", np.random.default_rng(k), ranges=QUIET, anatomy=anatomy)["meta"]
             for k in range(3)]
    for meta in draws:
        a = meta["acquisition"]
        assert 3.0 <= a["snr"] <= 60.0 and a["profile"] in ("box", "gaussian", "kspace")
        assert 1.0 * 0.85 <= a["spacing_mm"][a["slice_axis"]] <= 7.0 * 1.15


def test_superres_uses_the_projects_degradation_and_a_clean_target(anatomy):
    s = random_sample("superres", np.random.default_rng(2), ranges=QUIET, anatomy=anatomy, scale=(2, 1, 1),
                      degrade="thick_slices")
    low, high = s["input"], s["target"]
    assert low.shape == (high.shape[0] // 2,) + high.shape[1:] and np.allclose(low.physical_extent(),
                                                                               high.physical_extent())
    sigma = s["meta"]["superres"]["noise_sigma"]
    clean_low = thick_slices(high, 2, axis=0).array
    assert np.std(low.array - clean_low) == pytest.approx(sigma, rel=0.2)
    with pytest.raises(InputError, match="thick_slices"):
        random_sample("superres", np.random.default_rng(2), anatomy=anatomy, scale=(1, 2, 2), degrade="thick_slices")


def test_anomaly_twins_differ_only_at_the_lesions(anatomy):
    s = random_sample("anomaly", np.random.default_rng(6), ranges=QUIET, anatomy=anatomy)
    diff = np.abs(s["input"].array - s["target"].array)
    lesion = s["labels"].array == TISSUES.index("lesion")
    near = ndimage.binary_dilation(lesion, np.ones((3, 3, 3)), iterations=4)  # blurred by the acquisition
    assert diff[near].max() > s["meta"]["acquisition"]["noise_sigma"]  # the lesions show above the noise
    assert diff[~near].max() < 0.05 * diff[near].max()  # same appearance and noise draw elsewhere


def test_ct_denoise_pairs_span_the_noise_range():
    ranges = dataclasses.replace(QUIET, ct_noise_hu=(40.0, 40.0), ct_dose_fraction=(0.25, 0.25),
                                 ct_inplane_mm=(2.0, 2.0), ct_slice_mm=(2.0, 2.0), real_ct_fraction=0.0)
    s = random_sample("denoise", np.random.default_rng(1), ranges=ranges, shape=(4, 112, 96), modality="CT",
                      slices=1)
    low, full = s["input"].array[0], s["target"].array[0]
    brain = s["labels"].array[s["labels"].array.shape[0] // 2]
    brain = (brain == GM) | (brain == WM)
    noise_low = float(np.std((low - full)[brain])) / np.sqrt(1 + 0.25)  # the full dose carries 1/4 of the variance
    assert 40.0 / 1.6 < noise_low < 40.0 * 1.6  # nominal (calibrated on a whole head) within a factor 1.6
    assert np.std(full[brain]) < np.std(low[brain])
    assert "phantom" in s["meta"]["ct"]["real_ct"]


def test_ct_slabs_at_a_random_height_are_seeded_and_other_draws_unchanged():
    """slice_position="random" reconstructs a run of slices at a height drawn from its own stream: the same seed gives
    the same slab, seeds spread over the head, and every other draw (dose, noise level, pixel) is that of the
    central slab; an unknown position is refused."""
    ranges = dataclasses.replace(QUIET, ct_inplane_mm=(2.0, 2.0), ct_slice_mm=(2.0, 2.0), real_ct_fraction=0.0)

    def slab(seed: int, position: str):
        return random_sample("denoise", np.random.default_rng(seed), ranges=ranges, shape=(24, 48, 48),
                             modality="CT", slices=2, slice_position=position)

    heights = set()
    for seed in range(6):
        a, b, central = slab(seed, "random"), slab(seed, "random"), slab(seed, "central")
        assert np.array_equal(a["input"].array, b["input"].array) and a["input"].shape[0] == 2
        assert a["meta"]["ct"] == central["meta"]["ct"]
        heights.add(round(float(a["input"].origin[2]), 3))
    assert len(heights) >= 3
    with pytest.raises(InputError, match="slice_position"):
        slab(0, "top")



def test_ct_kernels_are_drawn_from_their_own_stream_at_the_nominal_noise():
    """ct_kernels / ct_kernel_cutoff: the kernel and cutoff come from the ranges, from a stream of their own (every
    other draw as with the ramp alone), the noise stays at its nominal level whatever the kernel, both images of a
    pair share the kernel, and an unknown kernel or a cutoff out of range is refused naming the known ones."""
    base = dataclasses.replace(QUIET, ct_noise_hu=(40.0, 40.0), ct_dose_fraction=(0.25, 0.25),
                               ct_inplane_mm=(2.0, 2.0), ct_slice_mm=(2.0, 2.0), real_ct_fraction=0.0)
    soft = dataclasses.replace(base, ct_kernels=("hann", "cosine"), ct_kernel_cutoff=(0.7, 0.9))

    def pair(ranges, seed):
        return random_sample("denoise", np.random.default_rng(seed), ranges=ranges, shape=(4, 112, 96),
                             modality="CT", slices=1)

    kernels = set()
    for seed in range(3):
        ramp, windowed = pair(base, seed), pair(soft, seed)
        meta = dict(windowed["meta"]["ct"])
        kernels.add(meta["kernel"])
        assert meta["kernel"] in ("hann", "cosine") and 0.7 <= meta["cutoff"] <= 0.9
        assert ramp["meta"]["ct"]["kernel"] == "ramp" and ramp["meta"]["ct"]["cutoff"] == 1.0
        for key in ("dose_fraction", "nominal_noise_hu", "pixel_mm"):
            assert meta[key] == ramp["meta"]["ct"][key]
        assert meta["full_dose_photons"] < ramp["meta"]["ct"]["full_dose_photons"]  # fewer photons, same noise
        brain = windowed["labels"].array[windowed["labels"].array.shape[0] // 2]
        brain = (brain == GM) | (brain == WM)
        noise = [float(np.std((s["input"].array[0] - s["target"].array[0])[brain])) for s in (ramp, windowed)]
        assert 0.75 < noise[1] / noise[0] < 1.33, noise
        assert np.array_equal(pair(soft, seed)["input"].array, windowed["input"].array)  # seeded
    assert len(kernels) == 2
    # "ramp" in a list is the plain full-band ramp: no cutoff drawn for it
    mixed = dataclasses.replace(base, ct_kernels=("ramp", "hann"), ct_kernel_cutoff=(0.7, 0.9))
    drawn = {}
    for seed in range(8):
        s = random_sample("denoise", np.random.default_rng(seed), ranges=mixed, shape=(4, 24, 24), modality="CT",
                          slices=1)
        drawn.setdefault(s["meta"]["ct"]["kernel"], set()).add(s["meta"]["ct"]["cutoff"])
    assert drawn["ramp"] == {1.0} and all(0.7 <= c <= 0.9 for c in drawn["hann"]), drawn
    with pytest.raises(InputError, match="ct_kernels must name.*hann"):
        DomainRanges(ct_kernels=("bone",))
    with pytest.raises(InputError, match="ct_kernel_cutoff"):
        DomainRanges.from_dict({"ct_kernel_cutoff": [0.05, 0.5]})

def test_coloured_noise_has_its_level_and_texture():
    """coloured_noise: the drawn standard deviation per plane; exponent 0 with cutoff 1 / (2 pi sigma) is white noise
    smoothed by a Gaussian of sigma pixels (same neighbour correlations); exponent 1 at the Nyquist cutoff is
    fine-grained (neighbours anti-correlated, as the ramp's); seeded; bad parameters refused."""
    from MedGANLogic.simulate.lowdose import coloured_noise

    def lag_correlation(x, lag):
        x = x - x.mean()
        return float((x * np.roll(x, lag, axis=-1)).mean() / x.var())

    smooth = coloured_noise((2, 128, 128), 30.0, 0.0, 1.0 / (2 * np.pi), np.random.default_rng(0))
    assert smooth.dtype == np.float32 and np.allclose(smooth.std(axis=(1, 2)), 30.0, rtol=1e-4)
    reference = ndimage.gaussian_filter(np.random.default_rng(1).standard_normal((128, 128)), 1.0, mode="wrap")
    for lag in (1, 2):
        assert abs(lag_correlation(smooth[0], lag) - lag_correlation(reference, lag)) < 0.05
    assert not np.array_equal(smooth[0], smooth[1])
    fine = coloured_noise((128, 128), 10.0, 1.0, 0.5, np.random.default_rng(0))
    assert lag_correlation(fine, 1) < -0.05 and abs(float(fine.std()) - 10.0) < 1e-3
    assert np.array_equal(fine, coloured_noise((128, 128), 10.0, 1.0, 0.5, np.random.default_rng(0)))
    with pytest.raises(InputError, match="cutoff > 0"):
        coloured_noise((8, 8), 1.0, 0.0, 0.0, np.random.default_rng(0))


def test_ct_image_noise_replaces_the_low_dose_image_from_its_own_stream():
    """ct_image_noise: with probability 1 every pair's low-dose image is its full-dose image plus coloured noise
    at the nominal level (texture drawn within its ranges, recorded in meta), the target and every other draw as
    without it; at 0 the pairs are byte for byte those of the default; a probability outside [0, 1] is refused."""
    base = dataclasses.replace(QUIET, ct_noise_hu=(30.0, 30.0), ct_dose_fraction=(0.25, 0.25),
                               ct_inplane_mm=(2.0, 2.0), ct_slice_mm=(2.0, 2.0), real_ct_fraction=0.0)
    image = dataclasses.replace(base, ct_image_noise=1.0, ct_image_noise_exponent=(0.0, 0.0),
                                ct_image_noise_cutoff=(0.1, 0.2))

    def pair(ranges, seed):
        return random_sample("denoise", np.random.default_rng(seed), ranges=ranges, shape=(4, 64, 64),
                             modality="CT", slices=2)

    for seed in range(2):
        projection, textured = pair(base, seed), pair(image, seed)
        assert np.array_equal(projection["target"].array, textured["target"].array)
        meta = textured["meta"]["ct"]
        assert meta["image_noise_exponent"] == 0.0 and 0.1 <= meta["image_noise_cutoff"] <= 0.2
        assert {k: v for k, v in meta.items() if not k.startswith("image_noise")} == projection["meta"]["ct"]
        noise = textured["input"].array - textured["target"].array
        assert np.allclose(noise.std(axis=(1, 2)), 30.0, rtol=1e-3)
        assert not np.array_equal(noise[0], noise[1])  # each slice its own draw
        assert np.array_equal(pair(image, seed)["input"].array, textured["input"].array)  # seeded
        # exponent 0 and a cutoff of at most 0.2 cycles per pixel: smoother than the ramp's grain
        assert np.mean(np.abs(np.diff(noise, axis=-1))) < np.mean(np.abs(np.diff(
            projection["input"].array - projection["target"].array, axis=-1)))
        never = dataclasses.replace(base, ct_image_noise=0.0, ct_image_noise_cutoff=(0.3, 0.4))
        assert np.array_equal(pair(never, seed)["input"].array, projection["input"].array)
    with pytest.raises(InputError, match="ct_image_noise is a probability"):
        DomainRanges(ct_image_noise=1.5)


# --- real CT -------------------------------------------------------------------------------------------------------
def test_real_ct_empty_cache_says_what_to_do(tmp_path):
    names, message = real_ct.real_ct_status(tmp_path)
    assert names == [] and "phantom CT anatomy only" in message
    with pytest.raises(InputError, match="phantom CT anatomy only"):
        random_sample("denoise", np.random.default_rng(0), shape=(4, 24, 24), modality="CT", slices=1,
                      real_ct=True, cache=tmp_path)


def _fake_loader(folder):
    """The real-image loader's interface over a folder of .npy slices (HU), as the real-data cache provides."""

    class Missing(InputError):
        pass

    def verified_path(name, cache=None):
        path = folder / name
        if not path.is_file():
            raise Missing(f"{name} missing")
        return path

    def load(name, cache=None):
        return Volume(np.load(folder / f"{name}_image.npy"), spacing=(0.6, 0.6, 5.0),
                      metadata={"name": name, "modality": "CT", "source": "fake cache"})

    images = {n: types.SimpleNamespace(file=f"{n}_image.npy") for n in real_ct.REAL_CT_NAMES}
    return types.SimpleNamespace(IMAGES=images, verified_path=verified_path, load=load, RealDataMissingError=Missing,
                                 cache_dir=lambda cache=None: folder, MAKE_TARGET="make eval-real",
                                 CACHE_ENV="MEDGAN_REAL_DATA")


def test_real_ct_slices_are_used_when_the_cache_has_them(tmp_path, monkeypatch):
    yy, xx = np.mgrid[:64, :64]
    body = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 28 ** 2, 40.0, -1000.0).astype(np.float32)
    np.save(tmp_path / "lung1_image.npy", np.stack([body, body]))
    monkeypatch.setattr(real_ct, "_real_data", lambda: _fake_loader(tmp_path))
    real_ct._load.cache_clear()
    names, message = real_ct.real_ct_status(tmp_path)
    assert names == ["lung1"] and "lung1" in message
    ranges = dataclasses.replace(QUIET, ct_inplane_mm=(0.5, 1.0), ct_noise_hu=(20.0, 20.0))
    s = random_sample("denoise", np.random.default_rng(0), ranges=ranges, shape=(4, 24, 24), modality="CT",
                      real_ct=True, cache=tmp_path)
    real_ct._load.cache_clear()
    meta = s["meta"]["ct"]["real_slice"]
    assert meta["name"] == "lung1" and meta["pixel_mm"] == pytest.approx(0.6)
    assert s["input"].shape == (1, 64, 64) and s["input"].spacing[0] == pytest.approx(0.6)
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2
    assert abs(float(np.mean(s["target"].array[0][inside])) - 40.0) < 10.0
    assert np.std(s["input"].array[0][inside]) > np.std(s["target"].array[0][inside])


# --- hooks for training ----------------------------------------------------------------------------------------------
def test_randomized_slices_dataset_items_are_reproducible(anatomy):
    from MedGANLogic.simulate.datasets import RandomizedSlices

    ds = RandomizedSlices("synthesize", 3, seed=4, shape=(8, 40, 40), context=1, source="any", target="T2w")
    a, b = ds[1], ds[1]
    assert len(ds) == 3 and a["source"].shape == (3, 40, 40) and a["target"].shape == (1, 40, 40)
    assert a["mask"].shape == (1, 40, 40) and set(np.unique(a["mask"].numpy())) <= {0.0, 1.0}
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["source"], ds[2]["source"])
    assert float(a["source"].min()) >= -1.01 and float(a["source"].max()) <= 1.01


def test_a_recipe_can_train_on_randomized_data():
    from MedGANLogic.train.config import resolve_config
    from MedGANLogic.train.data import build_batches

    card = {"id": "tiny-rand", "version": "0.0.1", "task": "synthesize", "dims": "2d",
            "input": {"modality": "MR", "normalization": {"kind": "mr_percentile", "percentiles": [0.5, 99.5],
                                                          "range": [-1, 1]}},
            "output": {"modality": "MR", "contrast": "T2w",
                       "normalization": {"kind": "fixed", "window": "auto", "range": [-1, 1]}},
            "license": "Apache-2.0", "intended_use": "research", "training_data": "randomized phantom"}
    config = resolve_config({
        "family": "pix2pix", "name": "tiny-rand", "steps": 1, "batch_size": 2, "device": "cpu",
        "data": {"source": "randomized", "task": "synthesize", "options": {"source": "any", "target": "T2w"},
                 "samples": {"train": 2, "val": 1}, "shape": [6, 40, 40], "spacing_mm": 2.0,
                 "ranges": {"slice_mm": [2.0, 4.0]}, "min_foreground": 0.0},
        "generator": {"name": "unet2d", "params": {"features": 8, "depth": 3}},
        "discriminator": {"channels": 8, "layers": 2}, "export": [{"generator": "G", "card": card}]})
    batches = build_batches(config, paired=True, size_multiple=8, domains={"G": ("source", "target")})
    batch = batches.batch(0)
    assert batch["source"].shape == (2, 1, 40, 40) and batch["target"].shape == (2, 1, 40, 40)
    assert batches.describe()["slices"] == {"source": 12, "target": 12}
    assert isinstance(config["export"][0]["card"]["output"]["normalization"]["window"], list)  # auto resolved


def test_skull_strip_keeps_the_intracranial_tissues_input_and_target_alike():
    """skull_strip = 1: nothing of scalp, fat or bone is left in input or target beyond the drawn margin; 0 (the
    default) draws nothing, so every sample a recipe made before stays byte for byte the same."""
    from MedGANLogic.simulate.tissue import BONE, FAT, SOFT

    head = (24, 28, 24)  # 4 mm voxels: the whole head, scalp included
    stripped = DomainRanges(partial_fov=0.0, motion=0.0, skull_strip=1.0, skull_strip_margin_mm=(0.0, 0.0))
    s = random_sample("synthesize", np.random.default_rng(3), ranges=stripped, shape=head, spacing_mm=4.0,
                      source="T1w", target="T2w")
    plain = random_sample("synthesize", np.random.default_rng(3), ranges=QUIET, shape=head, spacing_mm=4.0,
                          source="T1w", target="T2w")
    assert s["meta"]["skull_strip_margin_mm"] == 0.0 and plain["meta"]["skull_strip_margin_mm"] is None
    outside = np.isin(plain["labels"].array, (BONE, FAT, SOFT))
    far = outside & ~ndimage.binary_dilation(~outside, iterations=2)  # scalp and skull 2 voxels from the brain
    assert far.sum() > 100 and plain["input"].array[far].mean() > 10 * max(s["input"].array[far].mean(), 1e-3)
    assert np.all(s["target"].array[far] == 0) and np.all(s["labels"].array[far] == 0)
    brain = plain["labels"].array == WM
    assert np.array_equal(s["target"].array[brain], plain["target"].array[brain])  # the brain is untouched
    again = random_sample("synthesize", np.random.default_rng(3), ranges=DomainRanges(partial_fov=0.0, motion=0.0,
                                                                                      skull_strip=0.0),
                          shape=head, spacing_mm=4.0, source="T1w", target="T2w")
    assert np.array_equal(again["input"].array, plain["input"].array)


def test_randomized_volumes_turn_each_sample_to_a_drawn_plane():
    """data.planes: each sample is turned so that the drawn axis comes first (a 2D model then slices it there);
    the default [0] leaves every sample as it was."""
    from MedGANLogic.simulate.datasets import randomized_volumes

    data = {"task": "synthesize", "options": {"source": "T1w", "target": "T2w"}, "samples": {"train": 4},
            "shape": [8, 12, 10], "spacing_mm": 4.0}
    axial, _ = randomized_volumes(data, "train", True, 5)
    turned, names = randomized_volumes({**data, "planes": [2]}, "train", True, 5)
    for role in ("source", "target"):
        for a, t in zip(axial[role], turned[role]):
            assert t.shape == (10, 8, 12) and np.array_equal(t, np.moveaxis(a, 2, 0))
    assert all(n.endswith("/plane2") for n in names["source"])
    mixed, names = randomized_volumes({**data, "planes": [0, 1, 2], "samples": {"train": 12}}, "train", True, 5)
    assert {a.shape for a in mixed["source"]} == {(8, 12, 10), (12, 8, 10), (10, 8, 12)}
    with pytest.raises(ValueError, match="data.planes"):
        randomized_volumes({**data, "planes": [3]}, "train", True, 5)


def test_worker_processes_draw_the_same_samples(monkeypatch):
    """Recipes of 16 samples or more draw them in worker processes: the same bytes, in the same order, as drawn in
    the caller; MEDGAN_SAMPLE_WORKERS sets how many, and a bad value says what it wants."""
    from MedGANLogic.simulate.datasets import randomized_volumes
    from MedGANLogic.simulate.randomize import sample_workers

    data = {"task": "denoise", "options": {"modality": "MR"}, "samples": {"train": 16}, "shape": [6, 12, 10],
            "spacing_mm": 4.0}
    monkeypatch.setenv("MEDGAN_SAMPLE_WORKERS", "1")
    here, names = randomized_volumes(data, "train", True, 5)
    monkeypatch.setenv("MEDGAN_SAMPLE_WORKERS", "2")
    pooled, pooled_names = randomized_volumes(data, "train", True, 5)
    assert names == pooled_names and len(here["source"]) == 16
    for role in ("source", "target"):
        assert all(a.dtype == np.float32 and np.array_equal(a, b) for a, b in zip(here[role], pooled[role]))
    assert not np.array_equal(here["source"][0], here["source"][1])
    monkeypatch.setenv("MEDGAN_SAMPLE_WORKERS", "two")
    with pytest.raises(InputError, match="MEDGAN_SAMPLE_WORKERS"):
        sample_workers(16)
    monkeypatch.delenv("MEDGAN_SAMPLE_WORKERS")
    assert sample_workers(4) == 1 and 1 <= sample_workers(16) <= 8


def test_randomized_volumes_give_superres_targets_for_both_roles():
    """task superres: the super-resolution trainer degrades high-resolution volumes itself, so both roles are the
    sample's noise-free high-resolution target (of a drawn contrast); unpaired use is refused."""
    from MedGANLogic.simulate.datasets import randomized_volumes
    from MedGANLogic.simulate.randomize import DomainRandomizer

    data = {"task": "superres", "options": {"ordering": "any", "scale": [2, 1, 1], "degrade": "thick_slices"},
            "samples": {"train": 2}, "shape": [8, 12, 10], "spacing_mm": 4.0}
    vols, names = randomized_volumes(data, "train", True, 5)
    sample = DomainRandomizer(5, shape=(8, 12, 10), spacing_mm=4.0).sample("superres", 0, **data["options"])
    assert np.array_equal(vols["target"][0], sample["target"].array)
    assert all(np.array_equal(s, t) for s, t in zip(vols["source"], vols["target"]))
    assert names["target"][0] == "randomized-train-0/target"
    with pytest.raises(ValueError, match="paired"):
        randomized_volumes(data, "train", False, 5)


def test_brainmask_target_is_the_intracranial_space_whatever_the_contrast():
    """Task brainmask: the target is CSF, grey and white matter and lesions with holes filled (1) and nothing of
    scalp, fat or bone (0), the same for every drawn contrast; inside a partial field of view only; seeded."""
    from MedGANLogic.simulate.randomize import intracranial
    from MedGANLogic.simulate.tissue import BONE, CSF, FAT, GM, LESION, SOFT

    # 4 mm voxels: the whole head, scalp included
    anatomy = sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2)), (24, 28, 24), 4.0)
    truth = intracranial(anatomy)
    dominant = np.argmax(anatomy.fractions, axis=0)
    assert truth[np.isin(dominant, (GM, WM, LESION))].mean() > 0.99
    assert truth[np.isin(dominant, (BONE, FAT, SOFT))].mean() < 0.02 and truth[dominant == CSF].mean() > 0.8
    orderings = set()
    for seed in range(3):
        s = random_sample("brainmask", np.random.default_rng(seed), ranges=QUIET, anatomy=anatomy)
        assert s["input"].metadata["modality"] == "MR" and s["input"].shape == s["target"].shape
        assert set(np.unique(s["target"].array)) == {0.0, 1.0}
        assert np.array_equal(s["target"].array > 0, truth)
        orderings.add(s["meta"]["appearance"]["ordering"])
    assert len(orderings) > 1  # any contrast, one target
    again = random_sample("brainmask", np.random.default_rng(2), ranges=QUIET, anatomy=anatomy)
    assert np.array_equal(again["input"].array, s["input"].array)
    cut = random_sample("brainmask", np.random.default_rng(0), anatomy=anatomy,
                        ranges=DomainRanges(partial_fov=1.0, motion=0.0))
    box = [slice(a, b) for a, b in cut["meta"]["fov_box"]]
    outside = np.ones(truth.shape, bool)
    outside[tuple(box)] = False
    assert not cut["target"].array[outside].any() and cut["target"].array.sum() < truth.sum()



def test_face_adds_eyes_sinuses_and_skull_base_outside_the_cranium_only():
    """ranges.face: eyes (CSF-like vitreous recorded as extracranial), orbital fat, air spaces and skull-base bone
    painted around an anatomy that is otherwise the same draw: brain, lesions and the intracranial mask unchanged
    bit for bit, fractions still summing to one, the brainmask target leaving the eyes out; seeded; none by
    default."""
    from MedGANLogic.simulate.randomize import intracranial
    from MedGANLogic.simulate.tissue import AIR, BONE, FAT, LESION

    shape, spacing = (48, 56, 48), 4.0  # the whole head and face at 4 mm
    plain = sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2)), shape, spacing)
    faced = sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2), face=1.0), shape, spacing)
    assert plain.extracranial is None and "face" not in plain.draws
    assert {k: v for k, v in faced.draws.items() if k != "face"} == plain.draws
    assert len(faced.draws["face"]["eyes"]) == 2
    for f in (faced.fractions, faced.healthy):
        assert f.min() >= 0 and np.allclose(f.sum(axis=0), 1.0, atol=1e-5)
    brain = intracranial(plain)
    ml = spacing ** 3 / 1000.0
    for t in (GM, WM, LESION):  # the brain untouched; outside it only the blur's traces of parenchyma are painted
        assert np.array_equal(faced.fractions[t][brain], plain.fractions[t][brain])
        assert np.abs(faced.fractions[t] - plain.fractions[t]).sum() * ml < 0.1
    assert np.array_equal(faced.lesion_labels, plain.lesion_labels)
    assert np.array_equal(intracranial(faced), brain)
    eyes = faced.extracranial
    assert 5.0 < eyes.sum() * ml < 25.0 and not (eyes > 0.01)[brain].any()  # two eyes of ~6.5 ml, outside
    assert np.all(eyes <= faced.fractions[CSF] + 1e-6)
    head = plain.fractions[AIR] < 0.5
    gained = {t: float((faced.fractions[t] - plain.fractions[t])[head].sum() * ml) for t in (AIR, FAT, BONE)}
    assert gained[AIR] > 5.0 and gained[FAT] > 2.0 and gained[BONE] > 2.0, gained  # sinuses, orbits, skull base
    s = random_sample("brainmask", np.random.default_rng(1), ranges=QUIET, anatomy=faced)
    assert np.array_equal(s["target"].array > 0, brain) and not s["target"].array[eyes > 0.5].any()
    again = sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2), face=1.0), shape, spacing)
    assert np.array_equal(again.fractions, faced.fractions) and np.array_equal(again.extracranial, eyes)


def test_enhancement_brightens_sinuses_veins_and_plexus_on_t1w_only():
    """ranges.enhancement: a contrast-enhanced scan. The anatomy's fractions, lesions and draws stay as they were
    (the map of enhancing share is recorded beside them, never in lesions, air or bone); on T1w the enhancing
    structures come out well above white matter, other orderings ignore them; seeded; none by default."""
    from MedGANLogic.simulate.randomize import intracranial
    from MedGANLogic.simulate.tissue import AIR, BONE, LESION

    shape, spacing = (48, 56, 48), 4.0
    plain = sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2)), shape, spacing)
    lit = sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2), enhancement=1.0), shape, spacing)
    assert plain.enhancing is None and "enhancement" not in plain.draws
    assert {k: v for k, v in lit.draws.items() if k != "enhancement"} == plain.draws
    assert np.array_equal(lit.fractions, plain.fractions) and np.array_equal(lit.healthy, plain.healthy)
    e = lit.enhancing
    assert e.shape == shape and e.min() >= 0 and e.max() <= 1
    ml = spacing ** 3 / 1000.0
    assert 3.0 < e.sum() * ml < 60.0, e.sum() * ml  # sinuses and veins: tens of ml, not the brain
    assert not e[lit.fractions[LESION] > 0.99].any() and not e[(lit.fractions[AIR] + lit.fractions[BONE]) > 0.99].any()
    near = ndimage.binary_dilation(intracranial(lit), iterations=2)
    assert e[near].sum() > 0.8 * e.sum()  # inside the cranium, bar the skull-base veins
    t1 = random_sample("anomaly", np.random.default_rng(1), ranges=QUIET, anatomy=lit, ordering="T1w")
    assert t1["meta"]["appearance"]["enhancement"] > 0
    image, wm = t1["target"].array, plain.fractions[WM] > 0.9
    assert np.median(image[e > 0.7]) > 1.3 * np.median(image[wm])
    for ordering in ("T2w", "FLAIR"):  # ignored: the same bytes as without
        a, b = (random_sample("anomaly", np.random.default_rng(1), ranges=QUIET, anatomy=x, ordering=ordering)
                for x in (lit, plain))
        assert a["meta"]["appearance"]["enhancement"] is None
        assert np.array_equal(a["input"].array, b["input"].array)
    again = sample_anatomy(np.random.default_rng(5), DomainRanges(n_lesions=(2, 2), enhancement=1.0), shape, spacing)
    assert np.array_equal(again.enhancing, e)


def test_enhancing_lesions_have_a_bright_rim_in_the_lesioned_image():
    """ranges.lesion_enhancement: on a contrast-enhanced scan a lesion gets an enhancing rim (drawn last: the
    anatomy and its vessels stay as they were); on T1w the rim comes out well above white matter and above the
    lesion's own core; elsewhere the images barely change; none by default."""
    shape, spacing = (48, 56, 48), 3.0
    ranges = {"n_lesions": (2, 2), "lesion_radius_mm": (12.0, 20.0), "enhancement": 1.0, "partial_fov": 0.0,
              "motion": 0.0, "slice_mm": (3.0, 3.0), "inplane_mm": (3.0, 3.0)}
    plain = sample_anatomy(np.random.default_rng(5), DomainRanges(**ranges), shape, spacing)
    rimmed = sample_anatomy(np.random.default_rng(5), DomainRanges(**ranges, lesion_enhancement=1.0), shape, spacing)
    assert plain.lesion_enhancing is None and "lesion_enhancement" not in plain.draws
    assert {k: v for k, v in rimmed.draws.items() if k != "lesion_enhancement"} == plain.draws
    assert all(d["enhancing"] for d in rimmed.draws["lesion_enhancement"])
    assert np.array_equal(rimmed.fractions, plain.fractions) and np.array_equal(rimmed.enhancing, plain.enhancing)
    lesion = rimmed.lesion_labels > 0
    e = rimmed.lesion_enhancing
    assert e.max() >= 0.6 and not e[~lesion].any()
    a, b = (random_sample("anomaly", np.random.default_rng(1), ranges=DomainRanges(**ranges), anatomy=x,
                          ordering="T1w") for x in (rimmed, plain))
    # elsewhere only the noise level moves (sigma is the brain's mean signal, rims included, over the SNR): the
    # healthy twin and the lesioned image away from the lesions change by well under 1 %, the rims by far more
    rim, core = lesion & (e > 0.5), ndimage.binary_erosion(lesion, iterations=2) & (e == 0)
    away = (rimmed.fractions[WM] + rimmed.fractions[GM] > 0.9) & ~ndimage.binary_dilation(lesion, iterations=2)
    for x, y, where in ((a["target"], b["target"], away), (a["input"], b["input"], away)):
        assert np.median(np.abs(x.array[where] / y.array[where] - 1)) < 0.01
    assert np.median(a["input"].array[rim] / b["input"].array[rim]) > 1.2
    image = a["input"].array
    wm = (rimmed.fractions[WM] > 0.9) & ~ndimage.binary_dilation(lesion, iterations=3)
    assert rim.any() and core.any()
    assert np.median(image[rim]) > 1.2 * max(np.median(image[wm]), np.median(image[core]))


def test_juxtacortical_lesions_are_centred_in_the_cortex():
    """ranges.juxtacortical: lesions centred in cortical grey matter instead of white matter (reaching the brain's
    surface, beside sulcal CSF); 0 (default) draws exactly what was drawn before."""
    from MedGANLogic.simulate.tissue import CSF, GM

    shape, spacing = (48, 56, 48), 3.0
    base = {"n_lesions": (3, 3), "lesion_radius_mm": (6.0, 10.0), "periventricular": 0.0}
    before = sample_anatomy(np.random.default_rng(8), DomainRanges(**base), shape, spacing)
    again = sample_anatomy(np.random.default_rng(8), DomainRanges(**base, juxtacortical=0.0), shape, spacing)
    assert np.array_equal(before.lesion_labels, again.lesion_labels) and before.lesions == again.lesions
    cortical = sample_anatomy(np.random.default_rng(8), DomainRanges(**base, juxtacortical=1.0), shape, spacing)
    assert len(cortical.lesions) == 3
    for anatomy, in_gm in ((cortical, True), (before, False)):
        for lesion in anatomy.lesions:
            assert (anatomy.healthy[GM][tuple(lesion["centre_zyx"])] > 0.5) == in_gm
    near_csf = [ndimage.binary_dilation(a.lesion_labels > 0, iterations=2) & (a.healthy[CSF] > 0.5)
                for a in (cortical, before)]
    assert near_csf[0].sum() > near_csf[1].sum()


def test_lesionmask_target_is_the_lesion_labels(anatomy):
    """Task lesionmask: a FLAIR acquisition (by default) and the anatomy's lesions as a 0/1 target, where the
    lesions show on the input above the surrounding white matter."""
    s = random_sample("lesionmask", np.random.default_rng(4), ranges=QUIET, anatomy=anatomy)
    lesion = anatomy.lesion_labels > 0
    assert lesion.any() and np.array_equal(s["target"].array > 0, lesion)
    assert s["meta"]["appearance"]["ordering"] == "FLAIR" and s["input"].metadata["contrast"] == "FLAIR"
    core = ndimage.binary_erosion(lesion, iterations=1)
    wm = (s["labels"].array == WM) & ~ndimage.binary_dilation(lesion, iterations=3)
    assert np.median(s["input"].array[core if core.any() else lesion]) > np.median(s["input"].array[wm])


def test_shapes_coverage_measures_the_shape():
    """simulate.shapes: a ball's and a tube's partial-volume coverage add up to their volumes, and the template's RAS
    coordinates of its own voxel grid follow its affine."""
    from MedGANLogic.simulate import shapes
    from MedGANLogic.simulate.tissue import template_tissues

    spacing = 1.0
    axis = np.arange(-20.0, 20.0 + spacing, spacing, dtype=np.float32)
    p = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))  # (3, n, n, n) points in mm
    ball = shapes.coverage(shapes.ellipsoid_distance(p, (1.0, -2.0, 0.5), (8.0, 8.0, 8.0)), spacing)
    assert ball.min() >= 0.0 and ball.max() <= 1.0
    assert ball.sum() * spacing ** 3 == pytest.approx(4.0 / 3.0 * np.pi * 8.0 ** 3, rel=0.02)
    tube = shapes.coverage(shapes.tube_distance(p, (-10.0, 0.0, 0.0), (10.0, 0.0, 0.0), 3.0, 3.0), spacing)
    capsule = np.pi * 3.0 ** 2 * 20.0 + 4.0 / 3.0 * np.pi * 3.0 ** 3  # a cylinder with two half-ball caps
    assert tube.sum() * spacing ** 3 == pytest.approx(capsule, rel=0.03)
    assert shapes.tube_distance(p, (-10.0, 0.0, 0.0), (10.0, 0.0, 0.0), 2.0, 6.0)[20, 20, 20] == pytest.approx(-4.0)
    _, template, _ = template_tissues()
    kji = np.array([2.0, 5.0, 7.0], np.float32).reshape(3, 1, 1, 1)  # (k, j, i)
    lps = template.ijk_to_lps() @ np.array([7.0, 5.0, 2.0, 1.0])
    assert shapes.template_ras(kji).ravel() == pytest.approx([-lps[0], -lps[1], lps[2]], abs=1e-3)
