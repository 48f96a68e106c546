"""Phantom data: tissue model, MR contrasts, pseudo-CT, lesions, subjects and splits, low-dose CT, low-resolution MR."""

import numpy as np
import pytest
from skimage.transform import iradon, radon

from MedGANLogic.errors import InputError
from MedGANLogic.simulate import (
    ALL_CONTRASTS,
    SPLITS,
    TISSUES,
    kspace_truncate,
    low_dose_volume,
    make_subject,
    noiseless_reconstruction,
    simulate_low_dose,
    superres_pair,
    thick_slices,
)
from MedGANLogic.simulate.lowdose import FULL_DOSE_PHOTONS, filtered_back_projection, kernel_noise_factor
from MedGANLogic.simulate.mri import bias_field
from MedGANLogic.simulate.tissue import template_tissues
from MedGANLogic.volume import Volume


@pytest.fixture(scope="module")
def subject():
    return make_subject(SPLITS["test"][0])  # 2 mm, every contrast, 3 lesions


def pure(s, name, level=0.98):
    return s.healthy.tissues[TISSUES.index(name)] > level


def median(s, contrast, name, level=0.98):
    return float(np.median(s.healthy.volumes[contrast].array[pure(s, name, level)]))


# --- tissue model ------------------------------------------------------------------------------------------------
def test_tissue_fractions_sum_to_one_in_every_voxel(subject):
    fractions, grid, depth = template_tissues()
    assert fractions.shape == (len(TISSUES),) + grid.shape and fractions.dtype == np.float32
    for f in (fractions, subject.tissues, subject.healthy.tissues):
        assert f.min() >= 0
        assert np.abs(f.sum(axis=0) - 1).max() < 1e-5
    assert 0 <= depth.min() and depth.max() <= 1
    ml = {n: float(fractions[i].sum()) / 1000 for i, n in enumerate(TISSUES)}  # 1 mm voxels
    assert 800 < ml["gm"] < 1200 and 500 < ml["wm"] < 900 and 150 < ml["csf"] < 500 and ml["lesion"] == 0
    assert 300 < ml["bone"] < 800 and ml["fat"] > 100 and ml["soft"] > 200


def test_head_is_one_body_around_the_brain(subject):
    """Skull surrounds the brain; scalp and air lie outside it; below the brain the head goes on (no islands)."""
    from scipy import ndimage

    head = subject.healthy.head_mask
    labels, n = ndimage.label(head)
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.max() > 0.99 * head.sum()  # one connected head
    for k in range(head.shape[0]):  # every axial slice of the head is one piece
        if head[k].sum() > 50:
            _, pieces = ndimage.label(head[k])
            assert pieces == 1, k
    brain = pure(subject, "wm", 0.5) | pure(subject, "gm", 0.5)
    lowest_brain = np.flatnonzero(brain.any(axis=(1, 2)))[0]
    assert head[:lowest_brain].any() or lowest_brain == 0


# --- MR ------------------------------------------------------------------------------------------------------------
def test_contrasts_look_like_their_names(subject):
    m = {c: {t: median(subject, c, t) for t in ("wm", "gm", "csf")} for c in ("T1w", "T2w", "FLAIR", "PD")}
    assert m["T1w"]["wm"] > m["T1w"]["gm"] > m["T1w"]["csf"]  # WM brighter than GM; CSF darkest on T1w
    assert m["T2w"]["csf"] > m["T2w"]["gm"] > m["T2w"]["wm"]  # CSF brightest; WM darker than GM on T2w
    assert m["FLAIR"]["csf"] < 0.5 * min(m["FLAIR"]["wm"], m["FLAIR"]["gm"])  # CSF suppressed on FLAIR
    assert m["PD"]["gm"] > m["PD"]["wm"]
    assert median(subject, "T1w", "fat", 0.9) > m["T1w"]["wm"]  # scalp fat bright on T1w
    assert median(subject, "T1w", "bone", 0.9) < m["T1w"]["csf"] * 1.5  # skull dark on MR


def test_mr_noise_is_rician_at_the_requested_snr():
    sigmas = {}
    for snr in (10.0, 40.0):
        s = make_subject(3, spacing_mm=4.0, snr=snr, contrasts=("T1w",), n_lesions=0)
        air = s.tissues[TISSUES.index("air")] > 0.999
        sigmas[snr] = float(np.sqrt(np.mean(s.volumes["T1w"].array[air] ** 2) / 2))  # Rayleigh: E[M^2] = 2 s^2
        assert s.volumes["T1w"].array.min() >= 0  # a magnitude image
    assert sigmas[10.0] / sigmas[40.0] == pytest.approx(4.0, rel=0.1)


def test_bias_field_is_smooth_and_multiplicative():
    field = bias_field((20, 24, 22), np.random.default_rng(0), amplitude=0.15)
    assert field.min() > 0.5 and field.max() < 2.0 and field.std() > 0.01
    assert np.abs(np.diff(field, axis=2)).max() < 0.1  # slowly varying


# --- CT -----------------------------------------------------------------------------------------------------------
def test_ct_hounsfield_units_per_tissue(subject):
    ct = subject.healthy.volumes["CT"]
    assert ct.metadata["modality"] == "CT" and ct.metadata["units"] == "HU"
    assert abs(median(subject, "CT", "air") + 1000) < 20
    assert abs(median(subject, "CT", "fat", 0.9) + 100) < 25
    assert abs(median(subject, "CT", "csf") - 15) < 12
    assert abs(median(subject, "CT", "gm") - 40) < 12
    assert abs(median(subject, "CT", "wm") - 30) < 12
    assert median(subject, "CT", "gm") > median(subject, "CT", "wm")
    bone = ct.array[pure(subject, "bone", 0.9)]
    assert 300 < np.median(bone) < 1600 and np.percentile(bone, 99) > 1000 and np.percentile(bone, 5) < 1000


# --- lesions --------------------------------------------------------------------------------------------------------
def test_lesions_have_their_sequence_contrast(subject):
    assert subject.lesions and {les["kind"] for les in subject.lesions} <= {"oedema", "ms"}
    for kind in ("oedema", "ms"):
        s = make_subject(7, spacing_mm=4.0, n_lesions=2, lesion_radius_mm=(8, 10), lesion_kinds=(kind,))
        mask = s.volumes["lesion_mask"].array > 0
        assert mask.sum() > 5 and all(les["kind"] == kind for les in s.lesions)
        for contrast, brighter in (("T2w", True), ("FLAIR", True), ("T1w", False), ("CT", False)):
            lesion = np.median(s.volumes[contrast].array[mask])
            wm = median(s, contrast, "wm", 0.9)
            assert (lesion > wm) == brighter, (kind, contrast, lesion, wm)


def test_lesion_mask_covers_exactly_the_altered_voxels(subject):
    mask = subject.volumes["lesion_mask"].array > 0
    assert mask.sum() > 50 and subject.volumes["lesion_mask"].array.dtype == np.uint8
    for contrast in ALL_CONTRASTS:
        changed = subject.volumes[contrast].array != subject.healthy.volumes[contrast].array
        assert np.array_equal(changed, mask), contrast
    assert not subject.healthy.volumes["lesion_mask"].array.any()
    assert np.array_equal(subject.lesion_labels > 0, mask)
    assert sum(les["voxels"] for les in subject.lesions) == mask.sum()
    brain = (subject.healthy.tissues[TISSUES.index("wm")] + subject.healthy.tissues[TISSUES.index("gm")]) > 0.5
    assert brain[mask].all()  # in brain parenchyma
    assert (subject.healthy.tissues[TISSUES.index("wm")][mask] > 0.5).mean() > 0.6  # mostly white matter


def test_lesion_number_and_size_are_chosen(subject):
    none = make_subject(5, spacing_mm=4.0, n_lesions=0, contrasts=("T2w",))
    assert not none.volumes["lesion_mask"].array.any()
    assert np.array_equal(none.volumes["T2w"].array, none.healthy.volumes["T2w"].array)
    small = make_subject(5, spacing_mm=4.0, n_lesions=4, lesion_radius_mm=(4, 5), contrasts=("T2w",))
    large = make_subject(5, spacing_mm=4.0, n_lesions=4, lesion_radius_mm=(12, 14), contrasts=("T2w",))
    assert len(small.lesions) == len(large.lesions) == 4
    assert all(4 <= les["radius_mm"] <= 5 for les in small.lesions)
    assert large.volumes["lesion_mask"].array.sum() > 4 * small.volumes["lesion_mask"].array.sum()
    with pytest.raises(InputError, match="lesion kind"):
        make_subject(5, spacing_mm=4.0, lesion_kinds=("glioma",))


# --- subjects, seeds, splits, grids -------------------------------------------------------------------------------
def test_every_volume_of_a_subject_shares_one_grid(subject):
    ref = subject.volumes["T1w"]
    assert ref.spacing == (2.0, 2.0, 2.0)
    for v in list(subject.volumes.values()) + list(subject.healthy.volumes.values()):
        assert v.same_geometry(ref, atol=0)
    for c in ("T1w", "T2w", "PD", "FLAIR"):
        assert subject.volumes[c].metadata["modality"] == "MR" and subject.volumes[c].metadata["contrast"] == c
    assert subject.tissues.shape[1:] == subject.head_mask.shape == ref.shape
    coarse = make_subject(1, spacing_mm=4.0, contrasts=("T1w",))
    assert coarse.volumes["T1w"].spacing == (4.0, 4.0, 4.0)
    assert np.allclose(coarse.volumes["T1w"].physical_extent(), ref.physical_extent(), atol=4.0)


def test_same_seed_same_bytes_other_seed_other_anatomy(subject):
    again = make_subject(SPLITS["test"][0])
    for key, vol in subject.volumes.items():
        assert vol.array.tobytes() == again.volumes[key].array.tobytes(), key
    only_t2 = make_subject(SPLITS["test"][0], contrasts=("T2w",))  # a contrast does not depend on the others
    assert only_t2.volumes["T2w"].array.tobytes() == subject.volumes["T2w"].array.tobytes()
    assert set(only_t2.volumes) == {"T2w", "lesion_mask"}
    other = make_subject(SPLITS["test"][1], contrasts=("T1w",))
    assert not np.array_equal(other.tissues, subject.tissues)  # different anatomy
    assert not np.array_equal(other.volumes["lesion_mask"].array, subject.volumes["lesion_mask"].array)


def test_splits_never_overlap():
    assert set(SPLITS) == {"train", "val", "test"}
    names = list(SPLITS)
    for i, a in enumerate(names):
        assert len(set(SPLITS[a])) == len(SPLITS[a]) > 0
        for b in names[i + 1:]:
            assert not set(SPLITS[a]) & set(SPLITS[b]), (a, b)


def test_bad_subject_options_are_refused():
    with pytest.raises(InputError, match="Unknown contrast"):
        make_subject(0, contrasts=("T3w",))
    with pytest.raises(InputError, match="SNR"):
        make_subject(0, snr=0)
    with pytest.raises(InputError, match="spacing"):
        make_subject(0, spacing_mm=0.1)


# --- low-dose CT ---------------------------------------------------------------------------------------------------
def test_own_filtered_back_projection_is_iradons():
    image = np.zeros((65, 65))
    image[20:40, 25:50] = 1.0
    image[30:35, 10:20] = 2.0
    theta = np.linspace(0, 180, 90, endpoint=False)
    sino = radon(image, theta, circle=True)
    expected = iradon(sino, theta, circle=True, filter_name="ramp", output_size=65)
    assert np.allclose(filtered_back_projection(sino, theta, 65), expected, atol=1e-10)
    both = filtered_back_projection(sino + 2j * sino, theta, 65)  # a pair in one pass
    assert np.allclose(both.real, expected, atol=1e-10) and np.allclose(both.imag, 2 * expected, atol=1e-10)


def test_low_dose_noise_grows_as_one_over_sqrt_dose(subject):
    ct = subject.healthy.volumes["CT"].array
    wm = subject.healthy.tissues[TISSUES.index("wm")] > 0.9
    k = int(np.argmax(wm.sum(axis=(1, 2))))
    ref = noiseless_reconstruction(ct[k], pixel_mm=2.0)
    std = {1.0: [], 0.25: [], 0.1: []}
    for seed in range(3):
        for dose in (0.25, 0.1):
            low, full = simulate_low_dose(ct[k], dose, seed=seed, pixel_mm=2.0)
            std[dose].append((low - ref)[wm[k]].std())
            std[1.0].append((full - ref)[wm[k]].std())
    sd = {dose: float(np.mean(v)) for dose, v in std.items()}
    assert 3 < sd[1.0] < 8  # about 5 HU of quantum noise at full dose on 2 mm pixels
    for dose in (0.25, 0.1):
        expected = 1 / np.sqrt(dose)
        assert abs(sd[dose] / sd[1.0] - expected) / expected < 0.2, (dose, sd)


def test_reconstruction_kernel_smooths_the_noise_by_its_stated_factor(subject):
    """A soft kernel (windowed ramp) lowers the noise by kernel_noise_factor and coarsens its texture; the
    photon count scaled by the factor squared gives back the ramp's noise level; the default is the ramp itself."""
    ct = subject.healthy.volumes["CT"].array
    wm = subject.healthy.tissues[TISSUES.index("wm")] > 0.9
    k = int(np.argmax(wm.sum(axis=(1, 2))))
    assert kernel_noise_factor("ramp") == 1.0 and 0 < kernel_noise_factor("hann", 0.8) < kernel_noise_factor("hann")
    ramp_low, ramp_full = simulate_low_dose(ct[k], 0.25, seed=3, pixel_mm=2.0)
    same_low, _ = simulate_low_dose(ct[k], 0.25, seed=3, pixel_mm=2.0, kernel="ramp", cutoff=1.0)
    assert same_low.tobytes() == ramp_low.tobytes()

    def noise(kernel, cutoff, photons=FULL_DOSE_PHOTONS):
        ref = noiseless_reconstruction(ct[k], pixel_mm=2.0, kernel=kernel, cutoff=cutoff)
        diffs = [simulate_low_dose(ct[k], 0.25, seed=seed, pixel_mm=2.0, full_dose_photons=photons, kernel=kernel,
                                   cutoff=cutoff)[0] - ref for seed in range(3)]
        sd = float(np.mean([d[wm[k]].std() for d in diffs]))
        # texture: correlation of the noise with its neighbour one pixel along x, inside the white matter
        inner = wm[k][:, 1:] & wm[k][:, :-1]
        corr = float(np.mean([np.corrcoef(d[:, 1:][inner], d[:, :-1][inner])[0, 1] for d in diffs]))
        return sd, corr

    ramp_sd, ramp_corr = noise("ramp", 1.0)
    factor = kernel_noise_factor("hann", 0.8)
    hann_sd, hann_corr = noise("hann", 0.8)
    assert abs(hann_sd / ramp_sd - factor) / factor < 0.2, (hann_sd, ramp_sd, factor)
    assert hann_corr > ramp_corr + 0.3, (hann_corr, ramp_corr)  # blotchier: neighbours share the noise
    matched_sd, _ = noise("hann", 0.8, FULL_DOSE_PHOTONS * factor ** 2)
    assert abs(matched_sd / ramp_sd - 1) < 0.2, (matched_sd, ramp_sd)
    ref_ramp = noiseless_reconstruction(ct[k], pixel_mm=2.0)
    ref_hann = noiseless_reconstruction(ct[k], pixel_mm=2.0, kernel="hann", cutoff=0.8)
    assert abs(np.median(ref_hann[wm[k]]) - np.median(ref_ramp[wm[k]])) < 3  # same HU, softer edges
    with pytest.raises(InputError, match="reconstruction kernel"):
        simulate_low_dose(ct[k], 0.25, seed=0, kernel="bone")
    with pytest.raises(InputError, match="cutoff"):
        noiseless_reconstruction(ct[k], cutoff=1.5)


def test_dose_pair_is_matched_and_in_hu(subject):
    ct = subject.volumes["CT"].array[45]
    before = ct.copy()
    low, full = simulate_low_dose(ct, 0.25, seed=1, pixel_mm=2.0)
    assert np.array_equal(ct, before)  # input untouched
    assert low.shape == full.shape == ct.shape and low.dtype == full.dtype == np.float32
    brain = subject.tissues[TISSUES.index("wm")][45] > 0.9
    assert abs(np.median(full[brain]) - 30) < 10 and abs(np.median(low[brain]) - 30) < 12
    assert (low - full)[brain].std() > 2.0
    air = subject.tissues[TISSUES.index("air")][45] > 0.99
    assert abs(np.median(full[air]) + 1000) < 5
    again_low, again_full = simulate_low_dose(ct, 0.25, seed=1, pixel_mm=2.0)
    assert again_low.tobytes() == low.tobytes() and again_full.tobytes() == full.tobytes()
    _, full_10 = simulate_low_dose(ct, 0.1, seed=1, pixel_mm=2.0)
    assert np.array_equal(full_10, full)  # the full-dose image does not depend on the dose fraction
    other_low, _ = simulate_low_dose(ct, 0.25, seed=2, pixel_mm=2.0)
    assert not np.array_equal(other_low, low)


@pytest.mark.parametrize("bad, message", [({"dose_fraction": 0.0}, "Dose fraction"),
                                          ({"dose_fraction": 1.5}, "Dose fraction"),
                                          ({"pixel_mm": 0.0}, "pixel_mm"),
                                          ({"ct_slice_hu": np.zeros((3, 4, 5))}, "2D slice")])
def test_low_dose_refuses_bad_input(bad, message):
    args = {"ct_slice_hu": np.zeros((16, 16)), "dose_fraction": 0.5, **bad}
    with pytest.raises(InputError, match=message):
        simulate_low_dose(args.pop("ct_slice_hu"), args.pop("dose_fraction"), seed=0, **args)


def test_low_dose_volume_keeps_geometry_slice_by_slice(subject):
    ct = subject.volumes["CT"]
    part = ct.with_array(np.ascontiguousarray(ct.array[44:47]))
    low, full = low_dose_volume(part, 0.25, seed=4)
    for v in (low, full):
        assert v.same_geometry(part, atol=0) and v.metadata["units"] == "HU" and v.metadata["modality"] == "CT"
    assert low.metadata["dose_fraction"] == 0.25 and full.metadata["dose_fraction"] == 1.0
    pair = simulate_low_dose(part.array[1], 0.25, seed=4 * 100003 + 1, pixel_mm=2.0)
    assert np.array_equal(low.array[1], pair[0]) and np.array_equal(full.array[1], pair[1])


# --- low-resolution MR -----------------------------------------------------------------------------------------------
def _edges(v: Volume) -> tuple[np.ndarray, np.ndarray]:
    """LPS positions of the outer corners of voxel (0,0,0) and of the last voxel."""
    n = np.array(v.shape[::-1], dtype=float)
    first = v.ijk_to_lps() @ np.array([-0.5, -0.5, -0.5, 1])
    last = v.ijk_to_lps() @ np.append(n - 0.5, 1)
    return first[:3], last[:3]


@pytest.mark.parametrize("factor", [2, 4])
def test_superres_pairs_share_physical_extent(subject, factor):
    t2 = subject.volumes["T2w"]
    for axis in (0, 1, 2):
        low, high = superres_pair(t2, tuple(factor if a == axis else 1 for a in range(3)), "thick_slices")
        assert np.allclose(low.physical_extent(), high.physical_extent())
        assert np.allclose(_edges(low), _edges(high))  # same field of view, corner to corner
        spacing_axis = 2 - axis  # (x, y, z) index of array axis
        assert np.isclose(low.spacing[spacing_axis], factor * high.spacing[spacing_axis])
        # low slice 1 is the mean of high slices factor .. 2 factor - 1 (box slice profile)
        lo1 = np.take(low.array, 1, axis=axis)
        assert np.allclose(lo1, np.take(high.array, range(factor, 2 * factor), axis=axis).mean(axis=axis), atol=1e-3)
        # back up with Volume.resampled_grid lands exactly on the high-resolution grid
        scale = tuple(factor if a == axis else 1 for a in range(3))
        grid = low.resampled_grid(scale)
        assert grid["shape"] == high.shape and np.allclose(grid["origin"], high.origin)
        assert np.allclose(grid["spacing"], high.spacing)
    low_ip, high_ip = superres_pair(t2, (1, factor, factor), "kspace_truncate")
    assert np.allclose(_edges(low_ip), _edges(high_ip))
    assert low_ip.shape == (high_ip.shape[0], high_ip.shape[1] // factor, high_ip.shape[2] // factor)
    assert low_ip.spacing == (factor * high_ip.spacing[0], factor * high_ip.spacing[1], high_ip.spacing[2])
    # the mean signal is kept (up to Gibbs ringing, which magnitude images turn into a small positive bias)
    assert abs(low_ip.array.mean() - high_ip.array.mean()) / high_ip.array.mean() < 0.05


def test_thick_slices_keep_the_input_and_metadata(subject):
    t2 = subject.volumes["T2w"]
    before = t2.array.copy()
    thick = thick_slices(t2, 4, axis=0)
    assert np.array_equal(t2.array, before)
    assert thick.shape[0] == t2.shape[0] // 4 and thick.metadata["contrast"] == "T2w"
    assert "thick" in thick.metadata["acquisition"]


def test_kspace_truncation_of_a_band_limited_image_is_exact():
    """A sinusoid below the coarse grid's Nyquist frequency survives truncation unchanged (sampled coarsely)."""
    z, y, x = np.meshgrid(np.arange(2), np.arange(16), np.arange(16), indexing="ij")
    image = 100 + 10 * np.cos(2 * np.pi * 2 * x / 16) + 5 * np.sin(2 * np.pi * 3 * y / 16)
    vol = Volume(image.astype(np.float32), spacing=(1.0, 1.0, 3.0))
    low = kspace_truncate(vol, 2, axes=(1, 2))
    assert low.shape == (2, 8, 8) and low.spacing == (2.0, 2.0, 3.0)
    # coarse voxel centres sit between pairs of fine ones: sample the sinusoid there
    yc, xc = np.meshgrid(np.arange(8) * 2 + 0.5, np.arange(8) * 2 + 0.5, indexing="ij")
    expected = 100 + 10 * np.cos(2 * np.pi * 2 * xc / 16) + 5 * np.sin(2 * np.pi * 3 * yc / 16)
    assert np.allclose(low.array[0], expected, atol=1e-3)


def test_low_resolution_refuses_bad_factors(subject):
    with pytest.raises(InputError, match="factor"):
        thick_slices(subject.volumes["T2w"], 1)
    with pytest.raises(InputError, match="axes"):
        kspace_truncate(subject.volumes["T2w"], 2, axes=(3,))
    with pytest.raises(InputError, match="kind"):
        superres_pair(subject.volumes["T2w"], (2, 1, 1), kind="diagonal")
    with pytest.raises(InputError, match="one factor"):
        superres_pair(subject.volumes["T2w"], (1, 2, 4), "kspace_truncate")
    with pytest.raises(InputError, match="thick_slices scales one axis"):
        superres_pair(subject.volumes["T2w"], (1, 2, 2), "thick_slices")
    with pytest.raises(InputError, match="scale"):
        superres_pair(subject.volumes["T2w"], (2, 1), "thick_slices")
