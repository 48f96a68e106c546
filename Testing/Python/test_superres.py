"""Super-resolution: the SRGAN generator's shapes, and exact output geometry through MedGANLogic.run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_card

from MedGANLogic import run
from MedGANLogic.models.srgan import SRResNet, upsampling_stages
from MedGANLogic.volume import Volume


@pytest.mark.parametrize("scale,size", [((2, 1), (20, 30)), ((1, 4), (7, 9)), ((2, 2), (16, 12)),
                                        ((4, 4), (5, 6)), ((3, 2), (5, 7))])
def test_generator_scales_each_side(scale, size):
    net = SRResNet(in_channels=3, scale=scale, features=4, n_blocks=1)
    y = net(torch.randn(2, 3, *size))
    assert y.shape == (2, 1, size[0] * scale[0], size[1] * scale[1])
    assert np.prod([s for st in upsampling_stages(scale) for s in st]) == np.prod(scale)


def test_generator_rejects_bad_scales():
    with pytest.raises(ValueError, match="scale"):
        SRResNet(scale=(1, 1))
    with pytest.raises(ValueError, match="scale"):
        SRResNet(scale=(2,))


def test_untrained_residual_output_is_bilinear_interpolation():
    """With the learned branch silenced the generator is exactly bilinear (align_corners=False) interpolation."""
    net = SRResNet(scale=(2, 1), features=4, n_blocks=1)
    torch.nn.init.zeros_(net.head[-1].weight)
    torch.nn.init.zeros_(net.head[-1].bias)
    x = torch.randn(1, 1, 6, 5)
    expected = torch.nn.functional.interpolate(x, scale_factor=(2, 1), mode="bilinear", align_corners=False)
    assert torch.allclose(net(x), expected)


def sr_card(axis: int, factor: int, model_id: str, normalization: dict | None = None) -> dict:
    """A 2d SR card scaling array axis ``axis`` by ``factor``, slicing along the next axis."""
    slice_axis = (axis + 1) % 3
    scale = [1, 1, 1]
    scale[axis] = factor
    plane = [s for a, s in enumerate(scale) if a != slice_axis]
    return tiny_card(model_id, task="superres", slice_axis=slice_axis, scale_factor=scale, tile_size=None,
                     architecture={"name": "srresnet2d", "params": {"scale": plane, "features": 4, "n_blocks": 1}},
                     input={"modality": "MR", "contrast": "T1w", "normalization": normalization or
                            {"kind": "mr_percentile", "percentiles": [0.5, 99.5], "range": [-1, 1]}},
                     output={"modality": "MR", "contrast": "T1w", "units": "a.u.",
                             "normalization": {"kind": "same_as_input"}})


def corners_lps(volume: Volume) -> np.ndarray:
    """LPS positions of the outer edges of the voxel grid: the corners at index -0.5 and n - 0.5."""
    lo = np.array([-0.5, -0.5, -0.5, 1.0])
    hi = np.array([n - 0.5 for n in volume.shape[::-1]] + [1.0])
    m = volume.ijk_to_lps()
    return np.stack([(m @ lo)[:3], (m @ hi)[:3]])


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_geometry_is_exact_along_each_axis(make_model, oblique_volume, axis, factor):
    card = make_model(sr_card(axis, factor, f"sr-x{factor}-axis{axis}"))
    before = oblique_volume.array.copy()
    out = run("superres", oblique_volume, model=card.id, device="cpu").volume
    scale = np.ones(3, int)
    scale[axis] = factor
    assert out.shape == tuple(np.array(oblique_volume.shape) * scale)
    assert np.allclose(out.spacing, np.array(oblique_volume.spacing) / scale[::-1], rtol=0, atol=1e-12)
    assert np.allclose(out.direction, oblique_volume.direction, rtol=0, atol=1e-12)
    # same field of view: the outer voxel edges of input and output coincide in patient space
    assert np.allclose(corners_lps(out), corners_lps(oblique_volume), rtol=0, atol=1e-9)
    assert np.array_equal(oblique_volume.array, before)
    assert out.metadata["synthetic"] and "geometry_changed" in out.metadata


def test_content_lands_at_the_right_physical_positions(make_model):
    """A linear ramp along z, super-resolved x2 through-plane by an interpolating generator, is the same ramp
    sampled at the output voxels' physical positions: content and geometry agree."""
    from MedGANLogic.models import registry

    card_data = sr_card(0, 2, "sr-ramp", normalization={"kind": "none"})
    net = SRResNet(scale=(2, 1), features=4, n_blocks=1)
    torch.nn.init.zeros_(net.head[-1].weight)
    torch.nn.init.zeros_(net.head[-1].bias)
    card = make_model(card_data, net=net)
    z = np.arange(6, dtype=np.float32)
    vol = Volume(np.broadcast_to((z * 0.3 - 0.8)[:, None, None], (6, 5, 4)).copy(), spacing=(1.0, 1.0, 4.0),
                 origin=(0.0, 0.0, 10.0), metadata={"modality": "MR", "contrast": "T1w"})
    out = run("superres", vol, model=card.id, device="cpu").volume
    registry.clear_cache()
    z_mm_in = vol.origin[2] + 4.0 * z  # voxel centres along z (identity direction)
    z_mm_out = out.origin[2] + out.spacing[2] * np.arange(out.shape[0])
    expected = np.interp(z_mm_out, z_mm_in, z * 0.3 - 0.8)  # linear inside, constant beyond the end centres
    assert np.allclose(out.array[:, 2, 2], expected, atol=1e-5)


def test_slicing_along_the_scaled_axis_is_refused(make_model, oblique_volume):
    from MedGANLogic.errors import InputError

    card = make_model(sr_card(0, 2, "sr-refuse"))
    with pytest.raises(InputError, match="super-resolves"):
        run("superres", oblique_volume, model=card.id, device="cpu", slice_axis=0)


def test_the_self_ensemble_of_a_one_axis_model_averages_its_flips(make_model):
    """A model that zooms one axis of its slice is averaged over the slice's flips (2 or 4 passes: the network run on
    each flip of the input, undone on its output); 8 would transpose the slice and is refused, by the run and by
    the card."""
    from MedGANLogic.errors import InputError, ModelError

    card = make_model(sr_card(0, 2, "sr-flips", normalization={"kind": "none"}))  # zooms z, slices along y: a
    rng = np.random.default_rng(5)  # slice is (z, x); no window, so no pass is clipped before the mean
    vol = Volume(rng.random((6, 5, 10)).astype(np.float32), spacing=(1.0, 1.0, 4.0),
                 metadata={"modality": "MR", "contrast": "T1w"})
    once = run("superres", vol, model=card.id, device="cpu", ensemble=1)
    assert once.provenance["self_ensemble"] == 1  # the card sets none
    for count, flips in ((2, [(), (2,)]), (4, [(), (2,), (0,), (0, 2)])):  # slice dims -1, -2 = array axes x, z
        result = run("superres", vol, model=card.id, device="cpu", ensemble=count)
        assert result.provenance["self_ensemble"] == count and result.volume.same_geometry(once.volume, atol=0)
        runs = []
        for axes in flips:
            flipped = vol.with_array(np.ascontiguousarray(np.flip(vol.array, axes))) if axes else vol
            y = run("superres", flipped, model=card.id, device="cpu", ensemble=1).volume.array
            runs.append(np.flip(y, axes) if axes else y)
        assert np.allclose(result.volume.array, np.mean(runs, axis=0), atol=1e-5)
        assert not np.allclose(result.volume.array, once.volume.array, atol=1e-3)
    with pytest.raises(InputError, match="transposes each slice"):
        run("superres", vol, model=card.id, device="cpu", ensemble=8)
    assert make_model(dict(sr_card(0, 2, "sr-four"), extras={"self_ensemble": 4})).extras["self_ensemble"] == 4
    with pytest.raises(ModelError, match="8 passes transpose each slice"):
        make_model(dict(sr_card(0, 2, "sr-eight"), extras={"self_ensemble": {"cpu": 2, "cuda": 8}}))


def test_bspline_baseline_interpolates_on_the_output_grid():
    """The evaluation's cubic B-spline baseline reproduces a linear ramp at the output voxels' positions."""
    from MedGANLogic.evaluation.baselines import bspline_upsample
    from MedGANLogic.evaluation.sections.superres import degrade_volume

    z = np.arange(40, dtype=np.float32)
    hr = Volume(np.broadcast_to((5.0 * z + 100)[:, None, None], (40, 6, 5)).copy(), spacing=(2.0, 2.0, 2.0),
                origin=(1.0, -3.0, 7.0), metadata={"modality": "MR", "contrast": "T2w"})
    low, grid = degrade_volume(hr, "mr-sr-x2-throughplane")
    assert low.shape == (20, 6, 5) and grid.same_geometry(hr)
    up = bspline_upsample(low, grid)
    assert up.shape == hr.shape
    # thick slice k averages thin slices 2k, 2k+1, so a ramp's thick value sits at their midpoint: away from the
    # ends (where the spline's mirror boundary bends it) the interpolated thick slices give the thin ramp back
    assert np.allclose(up[12:28], hr.array[12:28], atol=2e-3)
    assert not np.allclose(np.repeat(low.array, 2, axis=0)[12:28], hr.array[12:28], atol=1.0)


def test_shipped_throughplane_model_restores_the_sample_to_its_2mm_grid(tmp_path):
    """`medgan run` on the bundled thick-slice sample: the output lies exactly on the 2 mm sample's grid and is
    closer to it than cubic B-spline interpolation of the same input."""
    from conftest import SAMPLE_DATA, run_shipped_model

    from MedGANLogic.evaluation.baselines import bspline_upsample
    from MedGANLogic.io import read_volume

    sr = run_shipped_model(tmp_path, "superres", "mr-sr-x2-throughplane", "sample_T2w_thick.nrrd", "--modality", "MR",
                           "--contrast", "T2w")
    thin = read_volume(SAMPLE_DATA / "sample_T2w.nrrd")
    thick = read_volume(SAMPLE_DATA / "sample_T2w_thick.nrrd")
    assert sr.same_geometry(thin, atol=1e-5) and sr.metadata["provenance"]["model"] == "mr-sr-x2-throughplane"
    head = thin.array > 0.1 * np.percentile(thin.array, 99)
    model_err = np.abs(sr.array - thin.array)[head].mean()
    spline_err = np.abs(bspline_upsample(thick, thin) - thin.array)[head].mean()
    assert model_err < 0.9 * spline_err, (model_err, spline_err)
