import numpy as np
import pytest

from MedGANLogic.volume import Volume


def test_ijk_to_ras_round_trip_keeps_oblique_geometry(oblique_volume):
    m = oblique_volume.ijk_to_ras()
    back = Volume.from_ijk_to_ras(oblique_volume.array, m)
    assert back.same_geometry(oblique_volume, atol=1e-9)
    # RAS flips the first two LPS axes
    lps = oblique_volume.ijk_to_lps()
    assert np.allclose(m[0], -lps[0]) and np.allclose(m[1], -lps[1]) and np.allclose(m[2], lps[2])


def test_voxel_position_formula(oblique_volume):
    i, j, k = 3, 5, 2
    v = oblique_volume
    expected = np.array(v.origin) + v.direction @ (np.array(v.spacing) * [i, j, k])
    assert np.allclose(oblique_volume.ijk_to_lps() @ [i, j, k, 1], [*expected, 1])


@pytest.mark.parametrize("scale", [(2, 1, 1), (1, 2, 2), (4, 1, 1), (1, 4, 1)])
def test_resampled_grid_keeps_field_of_view(oblique_volume, scale):
    grid = oblique_volume.resampled_grid(scale)
    fine = Volume(np.zeros(grid["shape"]), grid["spacing"], grid["origin"], grid["direction"])
    assert np.allclose(fine.physical_extent(), oblique_volume.physical_extent())
    # the outer edge of voxel 0 is in the same place on both grids
    half_old = oblique_volume.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1]
    half_new = fine.ijk_to_lps() @ [-0.5, -0.5, -0.5, 1]
    assert np.allclose(half_old, half_new)


def test_volume_rejects_non_3d_and_bad_spacing():
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))


def test_with_array_does_not_touch_the_original(oblique_volume):
    before = oblique_volume.array.copy()
    out = oblique_volume.with_array(oblique_volume.array * 2, metadata={"contrast": "T2w"})
    assert np.array_equal(oblique_volume.array, before)
    assert oblique_volume.metadata["contrast"] == "T1w" and out.metadata["contrast"] == "T2w"
    assert out.same_geometry(oblique_volume)
