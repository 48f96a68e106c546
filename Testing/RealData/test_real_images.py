"""The real images of `make eval-real`, read from the fetched cache (part of `make eval-real`, not `make test`:
the cache exists only after that target has fetched it, and a missing cache is an error here, never a skip)."""

from __future__ import annotations

import numpy as np
import pytest

from MedGANLogic.evaluation import real_data, real_masks

# (shape z, y, x; spacing x, y, z) as the files' headers state them
HEADERS = {
    "lung1": ((48, 512, 512), (0.5703125, 0.5703125, 5.0)),
    "lung2": ((61, 512, 512), (0.6269531, 0.6269531, 5.0)),
    "brain1": ((25, 256, 256), (0.78125, 0.78125, 6.5)),
    "brain2": ((23, 256, 256), (0.78125, 0.78125, 6.5)),
    "breast1": ((21, 120, 45), (0.664062, 0.664062, 2.1)),
    "stent": ((256, 128, 128), (1.0, 1.0, 1.0)),
    "t1_coronal": ((1, 256, 256), (1.0, 1.0, 1.0)),
    "t2_brain": ((24, 58, 58), (4.0, 4.0, 5.0)),
}


def test_the_cache_is_complete():
    assert real_data.missing_files() == [], "run `make eval-real` to fetch the real images"


@pytest.mark.parametrize("name", list(HEADERS))
def test_geometry_as_the_header_states(name):
    vol = real_data.load(name)
    shape, spacing = HEADERS[name]
    assert vol.shape == shape
    np.testing.assert_allclose(vol.spacing, spacing, rtol=1e-5)
    assert np.isfinite(vol.array).all()
    if vol.metadata["modality"] == "CT" and name != "stent":
        assert vol.array.min() <= -1000 and np.median(vol.array) < 0  # HU: air around the chest


@pytest.mark.parametrize("name", [n for n, s in real_data.IMAGES.items() if s.label])
def test_labels_lie_on_the_image_grid_and_mark_a_tumour(name):
    image, label = real_data.load(name), real_data.load_label(name)
    assert label.same_geometry(image)
    assert 50 < int(label.array.sum()) < 0.05 * label.array.size


@pytest.mark.parametrize("name", ["brain1", "brain2"])
def test_rough_brain_masks_hold_the_tumours_and_keep_t1_order(name):
    vol, tumour = real_data.load(name), real_data.load_label(name).array > 0
    brain = real_masks.mr_brain(vol.array, vol.spacing)
    assert (brain & tumour).sum() >= 0.8 * tumour.sum()
    classes = real_masks.t1_tissue_classes(vol.array, brain, vol.spacing, tumour)
    assert classes["csf"].sum() > 100 and classes["wm"].sum() > 1000
    assert np.median(vol.array[classes["csf"]]) < 0.8 * np.median(vol.array[classes["wm"]])
