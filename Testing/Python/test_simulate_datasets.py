"""Phantom torch datasets: 2D slices, 2.5D slabs, 3D patches; paired, unpaired, super-resolution, low-dose CT."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from MedGANLogic.simulate import make_subject
from MedGANLogic.simulate.datasets import (
    PhantomPatches3D,
    PhantomSlices,
    default_normalize,
    default_spec,
    parse_key,
    subject_arrays,
)

RAW = {"kind": "none"}  # no normalisation: items can be compared with the volumes


def test_slabs_are_paired_slices_with_neighbours_as_channels():
    ds = PhantomSlices([2000], "T1w", "T2w", dims="2.5d", context=2, augment=False)
    i = len(ds) // 2
    item = ds[i]
    assert set(item) == {"source", "target", "mask"}
    assert all(t.dtype == torch.float32 for t in item.values())
    seed, k = ds.index[i]
    t1, t2 = ds.volume(seed, "T1w"), ds.volume(seed, "T2w")
    assert item["source"].shape == (5,) + t1.shape[1:] and item["target"].shape == (1,) + t1.shape[1:]
    assert np.array_equal(item["source"].numpy(), t1[k - 2:k + 3])  # centre channel is the slice itself
    assert np.array_equal(item["target"][0].numpy(), t2[k])  # paired: the same slice of the same subject
    mask = make_subject(2000).volumes["lesion_mask"].array
    assert np.array_equal(item["mask"][0].numpy(), mask[k])
    assert -1 <= float(item["source"].min()) and float(item["source"].max()) <= 1  # default: [-1, 1]
    # slices with almost no head are left out; every kept slice has head in it
    assert 0 < len(ds) < t1.shape[0]
    edge = PhantomSlices([2000], "T1w", dims="2.5d", context=1, augment=False, min_foreground=0.0)
    first = edge[0]["source"].numpy()
    assert np.array_equal(first[0], first[1])  # the neighbour beyond the volume repeats the edge slice


def test_default_normalisation_is_the_engines_and_can_be_replaced():
    ct = subject_arrays(2000, ["CT"])["CT"]
    assert default_spec("CT") == {"kind": "ct_window", "window": [-1000, 2000], "range": [-1, 1]}
    norm = default_normalize(ct, default_spec("CT"))
    assert np.allclose(norm, np.clip((ct + 1000) / 3000 * 2 - 1, -1, 1), atol=1e-5)
    assert default_spec("T1w")["kind"] == "mr_percentile" and default_spec("lesion_mask") == {"kind": "none"}
    seen = []

    def normalize(array, spec):
        seen.append(spec)
        return array / 1000.0

    card_spec = {"kind": "fixed", "window": [0, 1000], "range": [-1, 1]}
    ds = PhantomSlices([2000], "T1w", "T2w", normalize=normalize, specs={"T2w": card_spec}, augment=False)
    assert card_spec in seen and default_spec("T1w") in seen
    seed, k = ds.index[0]
    raw = subject_arrays(2000, ["T1w"])["T1w"]
    assert np.allclose(ds[0]["source"][0].numpy(), raw[k] / 1000.0)


def test_augmentation_flips_every_array_together_and_is_reproducible():
    specs = {"T2w_thick2": RAW, "T2w": RAW}
    plain = PhantomSlices([2000], "T2w_thick2", "T2w", axis=1, augment=False, specs=specs)
    aug = PhantomSlices([2000], "T2w_thick2", "T2w", axis=1, augment=True, intensity_jitter=0.05, seed=3,
                        specs=specs)
    flips = set()
    for i in range(0, len(plain), 5):
        p, a = plain[i], aug[i]
        assert torch.equal(a["source"], aug[i]["source"])  # same index, same item
        fits = []
        for flip in (False, True):
            ref = {k: (v.flip(-1) if flip else v) for k, v in p.items()}
            bright = ref["source"] > 50
            gain = float(torch.median(a["source"][bright] / ref["source"][bright]))
            if torch.allclose(a["source"], ref["source"] * gain, rtol=1e-4, atol=1e-3):
                fits.append(flip)
                assert abs(gain - 1) <= 0.05 + 1e-6
                # the same contrast on both sides (super-resolution): the target gets the same gain
                assert torch.allclose(a["target"], ref["target"] * gain, rtol=1e-4, atol=1e-3)
                assert torch.equal(a["mask"], ref["mask"])
        assert fits, i
        flips.update(fits)
    assert flips == {False, True}  # both happen


def test_super_resolution_items_pair_low_and_high_resolution_grids():
    thick = PhantomSlices([2000], "T2w_thick2", "T2w", axis=1, augment=False, specs={"T2w_thick2": RAW, "T2w": RAW})
    item = thick[len(thick) // 2]
    src, tgt = item["source"][0].numpy(), item["target"][0].numpy()
    assert tgt.shape == (2 * src.shape[0], src.shape[1]) and item["mask"].shape[1:] == tgt.shape
    assert np.allclose(src, tgt.reshape(src.shape[0], 2, -1).mean(axis=1), atol=1e-3)  # thick = mean of 2 slices
    ks = PhantomSlices([2000], "T2w_kspace2", "T2w", axis=0, augment=False)
    item = ks[len(ks) // 2]
    assert item["target"].shape[1:] == (2 * item["source"].shape[1], 2 * item["source"].shape[2])
    with pytest.raises(ValueError, match="axis"):
        PhantomSlices([2000], "T2w_thick2", "T2w", axis=0)
    patches = PhantomPatches3D([2000], "T2w_thick4", "T2w", patch=(4, 16, 16), patches_per_subject=3,
                               augment=False, specs={"T2w_thick4": RAW, "T2w": RAW})
    p = patches[2]
    assert p["source"].shape == (1, 4, 16, 16) and p["target"].shape == p["mask"].shape == (1, 16, 16, 16)
    assert np.allclose(p["source"][0].numpy(), p["target"][0].numpy().reshape(4, 4, 16, 16).mean(axis=1), atol=1e-3)


def test_low_dose_ct_items_differ_only_by_noise():
    ds = PhantomSlices([2001], "CT_dose25", "CT_dose100", augment=False, spacing_mm=4.0,
                       specs={"CT_dose100": {"kind": "same_as_input"}})
    arrays = subject_arrays(2001, ["CT_dose25", "CT_dose100", "CT"], spacing_mm=4.0)
    low, full, ct = arrays["CT_dose25"], arrays["CT_dose100"], arrays["CT"]
    assert low.shape == full.shape == ct.shape
    brain = ndimage.binary_erosion((ct > 0) & (ct < 60), iterations=2)  # soft tissue away from the skull
    assert abs(np.median((low - ct)[brain])) < 5 and abs(np.median((full - ct)[brain])) < 5  # HU kept
    diff = (low - full)[brain]
    assert abs(np.median(diff)) < 1 and diff.std() > 2  # the pair differs by zero-mean noise
    item = ds[len(ds) // 2]
    assert item["source"].shape == item["target"].shape
    assert not torch.equal(item["source"], item["target"])


def test_unpaired_domains_come_from_disjoint_subjects():
    ds = PhantomSlices([2000, 2001, 2002, 2003], "T1w", "CT", paired=False, augment=False, mask=None)
    assert ds.source_seeds == [2000, 2001] and ds.target_seeds == [2002, 2003]
    assert not set(ds.source_seeds) & set(ds.target_seeds)
    targets = {(2002, "CT"): ds.volume(2002, "CT"), (2003, "CT"): ds.volume(2003, "CT")}
    for i in range(0, len(ds), 11):
        item = ds[i]
        _, k = ds.index[i]
        assert set(item) == {"source", "target"}
        assert any(np.array_equal(item["target"][0].numpy(), v[k]) for v in targets.values())
    with pytest.raises(ValueError, match="unpaired"):
        PhantomSlices([2000], "T1w", "CT", paired=False)


def test_patches_fall_in_the_head_and_batch_through_a_dataloader():
    ds = PhantomPatches3D([2000], "T1w", "FLAIR", patch=(16, 24, 24), patches_per_subject=8)
    assert len(ds) == 8
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["source"].shape == (4, 1, 16, 24, 24) and batch["target"].shape == (4, 1, 16, 24, 24)
    background = float(ds.volume(2000, "T1w").min())
    for i in range(len(ds)):
        assert (ds[i]["source"] > background + 0.2).float().mean() > 0.2  # not an all-air patch


def test_keys_and_options_are_checked():
    assert parse_key("T2w_thick4") == ("T2w", "thick", 4)
    assert parse_key("CT_dose10") == ("CT", "dose", 10)
    for bad in ("T3w", "CT_dose0", "CT_dose250", "T2w_thick1", "lesion"):
        with pytest.raises(ValueError, match="unknown phantom key"):
            parse_key(bad)
    with pytest.raises(ValueError, match="seeds"):
        PhantomSlices([], "T1w")
    with pytest.raises(ValueError, match="dims"):
        PhantomSlices([2000], "T1w", dims="3d")
    with pytest.raises(ValueError, match="mask"):
        PhantomSlices([2000], "T2w_kspace2")
