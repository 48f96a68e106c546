"""Phantom data: tissue model, contrasts, CT, lesions, low-dose CT, low-resolution MR, splits, sample data."""

import argparse
import builtins
import filecmp

import numpy as np
import pytest
from conftest import REPO

from MedGANLogic.simulate import (
    SPLITS,
    TISSUES,
    kspace_truncate,
    make_subject,
    noiseless_reconstruction,
    simulate_dose_pair,
    simulate_low_dose,
    superres_pair,
    thick_slices,
)
from MedGANLogic.simulate import cli as sim_cli


@pytest.fixture(scope="module")
def subject():
    return make_subject(SPLITS["test"][0])


def pure(subject, name, level=0.98):
    return subject.healthy.tissues[TISSUES.index(name)] > level


def median(subject, contrast, name):
    return float(np.median(subject.healthy.volumes[contrast].array[pure(subject, name)]))


def test_tissue_fractions_sum_to_one(subject):
    for s in (subject, subject.healthy):
        assert s.tissues.min() >= 0
        assert np.allclose(s.tissues.sum(axis=0), 1.0, atol=1e-5)
    volumes = {n: float(subject.healthy.tissues[i].sum()) * 8e-3 for i, n in enumerate(TISSUES)}  # mL at 2 mm
    assert 800 < volumes["gm"] < 1200 and 500 < volumes["wm"] < 900 and 150 < volumes["csf"] < 500


def test_contrasts_look_like_their_names(subject):
    m = {c: {t: median(subject, c, t) for t in ("wm", "gm", "csf")} for c in ("T1w", "T2w", "FLAIR", "PD")}
    assert m["T1w"]["wm"] > m["T1w"]["gm"] > m["T1w"]["csf"]  # WM brightest, CSF dark on T1w
    assert m["T2w"]["csf"] > m["T2w"]["gm"] > m["T2w"]["wm"]  # CSF brightest, WM darker than GM on T2w
    assert m["FLAIR"]["csf"] < 0.5 * min(m["FLAIR"]["wm"], m["FLAIR"]["gm"])  # CSF suppressed on FLAIR
    assert m["PD"]["gm"] > m["PD"]["wm"]


def test_lesions_have_their_sequence_contrast(subject):
    mask = subject.volumes["lesion_mask"].array > 0
    assert mask.sum() > 50
    for contrast, brighter in (("T2w", True), ("FLAIR", True), ("T1w", False), ("CT", False)):
        lesion = np.median(subject.volumes[contrast].array[mask])
        wm = median(subject, contrast, "wm")
        assert (lesion > wm) == brighter, contrast


def test_ct_hounsfield_units_per_tissue(subject):
    ct = subject.healthy.volumes["CT"]
    assert ct.metadata["units"] == "HU"
    assert abs(median(subject, "CT", "air") + 1000) < 20
    assert abs(median(subject, "CT", "fat") + 100) < 25
    assert abs(median(subject, "CT", "csf") - 15) < 12
    assert abs(median(subject, "CT", "gm") - 40) < 12
    assert abs(median(subject, "CT", "wm") - 30) < 12
    bone = ct.array[pure(subject, "bone", 0.9)]
    assert 300 < np.median(bone) < 1600 and np.percentile(bone, 99) > 1000


def test_lesion_mask_covers_exactly_the_altered_voxels(subject):
    mask = subject.volumes["lesion_mask"].array > 0
    for contrast in ("T1w", "T2w", "PD", "FLAIR", "CT"):
        changed = subject.volumes[contrast].array != subject.healthy.volumes[contrast].array
        assert np.array_equal(changed, mask), contrast
    assert not subject.healthy.volumes["lesion_mask"].array.any()


def test_every_volume_of_a_subject_shares_one_grid(subject):
    ref = subject.volumes["T1w"]
    for v in list(subject.volumes.values()) + list(subject.healthy.volumes.values()):
        assert v.same_geometry(ref, atol=0)


def test_same_seed_same_bytes_other_seed_other_anatomy(subject):
    again = make_subject(SPLITS["test"][0])
    for key, vol in subject.volumes.items():
        assert vol.array.tobytes() == again.volumes[key].array.tobytes(), key
    other = make_subject(SPLITS["test"][1])
    assert not np.array_equal(other.volumes["T1w"].array, subject.volumes["T1w"].array)


def test_splits_never_overlap():
    names = list(SPLITS)
    assert set(names) == {"train", "val", "test"}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(SPLITS[a]) & set(SPLITS[b])


def test_low_dose_noise_grows_as_one_over_sqrt_dose(subject):
    ct = subject.healthy.volumes["CT"].array
    wm = subject.healthy.tissues[TISSUES.index("wm")] > 0.9
    k = int(np.argmax(wm.sum(axis=(1, 2))))
    ref = noiseless_reconstruction(ct[k], pixel_mm=2.0)
    region = wm[k]
    std = {}
    for dose in (1.0, 0.25, 0.1):
        diffs = [simulate_low_dose(ct[k], dose, seed=s, pixel_mm=2.0) - ref for s in range(3)]
        std[dose] = float(np.mean([d[region].std() for d in diffs]))
    for dose in (0.25, 0.1):
        expected = 1 / np.sqrt(dose)
        assert abs(std[dose] / std[1.0] - expected) / expected < 0.2, (dose, std)


def test_dose_pair_is_matched_and_in_hu(subject):
    ct = subject.volumes["CT"].array[45]
    low, full = simulate_dose_pair(ct, 0.25, seed=1, pixel_mm=2.0)
    assert low.shape == full.shape == ct.shape
    brain = subject.tissues[TISSUES.index("wm")][45] > 0.9
    assert abs(np.median(full[brain]) - 30) < 15 and abs(np.median(low[brain]) - 30) < 20
    assert (low - full)[brain].std() > 1.0
    with pytest.raises(Exception, match="Dose fraction"):
        simulate_dose_pair(ct, 1.5, seed=1)


@pytest.mark.parametrize("factor", [2, 4])
def test_superres_pairs_share_physical_extent(subject, factor):
    t2 = subject.volumes["T2w"]
    low, high = superres_pair(t2, factor, "throughplane", axis=0)
    assert np.allclose(low.physical_extent(), high.physical_extent())
    assert np.isclose(low.spacing[2], factor * high.spacing[2]) and low.spacing[:2] == high.spacing[:2]
    # the edge of voxel 0 is in the same place; low slice k is the mean of high slices k*f .. k*f+f-1
    assert np.allclose(low.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1], high.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1])
    assert np.allclose(low.array[1], high.array[factor:2 * factor].mean(axis=0), atol=1e-3)
    # going back up with resampled_grid lands on the high-resolution grid exactly
    grid = low.resampled_grid((factor, 1, 1))
    assert grid["shape"] == high.shape and np.allclose(grid["origin"], high.origin)
    low_ip, high_ip = superres_pair(t2, factor, "inplane", axis=0)
    assert np.allclose(low_ip.physical_extent(), high_ip.physical_extent())
    assert low_ip.shape == (high_ip.shape[0], high_ip.shape[1] // factor, high_ip.shape[2] // factor)
    # the mean signal is kept (to Gibbs ringing, which magnitude images turn into a small positive bias)
    assert abs(low_ip.array.mean() - high_ip.array.mean()) / high_ip.array.mean() < 0.05


def test_thick_slices_and_kspace_refuse_bad_factors(subject):
    with pytest.raises(Exception, match="factor"):
        thick_slices(subject.volumes["T2w"], 1)
    with pytest.raises(Exception, match="axes"):
        kspace_truncate(subject.volumes["T2w"], 2, axes=(3,))


def _args(**kw):
    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return parser.parse_args(argv)


@pytest.mark.parametrize("options, message", [
    ({"contrasts": "T1w,T3w"}, "Unknown contrast"),
    ({"dose": 0}, "Dose fraction"),
    ({"dose": 1.2}, "Dose fraction"),
    ({"snr": -3}, "SNR must be positive"),
])
def test_simulate_cli_bad_input_writes_nothing(tmp_path, capsys, options, message):
    out = tmp_path / "out"
    assert sim_cli.main(_args(subject=1, output=out, **options)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_simulate_cli_missing_nilearn(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_nilearn(name, *args, **kwargs):
        if name == "nilearn":
            raise ImportError("No module named 'nilearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nilearn)
    assert sim_cli.main(_args(subject=1, output=tmp_path / "out")) == 2
    assert "nilearn is not installed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_simulate_cli_writes_a_subject(tmp_path):
    assert sim_cli.main(_args(subject=2000, contrasts="T1w", output=tmp_path, lesions=0)) == 0
    from MedGANLogic.io import read_volume

    vol = read_volume(tmp_path / "sub-2000_T1w.nii.gz")
    assert vol.shape == make_subject(2000, n_lesions=0, contrasts=("T1w",)).volumes["T1w"].shape


@pytest.mark.slow
def test_sample_data_regenerates_bit_for_bit(tmp_path):
    from MedGANLogic.simulate.sample import write_sample_data

    write_sample_data(tmp_path)
    committed = REPO / "Resources" / "SampleData"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if not p.name.startswith("."))
    match, mismatch, errors = filecmp.cmpfiles(committed, tmp_path, names, shallow=False)
    assert not mismatch and not errors, mismatch


def test_datasets_give_slices_slabs_and_patches():
    from MedGANLogic.simulate.datasets import PhantomPatches3D, PhantomSlices

    ds = PhantomSlices([2000], "T1w", "T2w", dims="2.5d", context=1, augment=False)
    item = ds[len(ds) // 2]
    assert item["source"].shape[0] == 3 and item["target"].shape[0] == 1 and item["mask"].shape[0] == 1
    seed, k = ds.index[len(ds) // 2]
    assert np.allclose(item["source"][1].numpy(), ds.volume(seed, "T1w")[k])  # centre channel = the slice
    assert np.allclose(item["target"][0].numpy(), ds.volume(seed, "T2w")[k])  # paired: same slice
    assert -1 <= float(item["source"].min()) and float(item["source"].max()) <= 1
    unpaired = PhantomSlices([2000, 2001], "T1w", "CT", paired=False, augment=False)
    assert unpaired.source_seeds == [2000] and unpaired.target_seeds == [2001]
    patches = PhantomPatches3D([2000], "T1w", "T2w", patch=(16, 24, 24), patches_per_subject=2)
    p = patches[1]
    assert p["source"].shape == (1, 16, 24, 24) and p["target"].shape == (1, 16, 24, 24)
    assert len(patches) == 2
