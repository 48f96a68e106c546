"""Our side of running a published peer (ECLARE) beside MedGAN in the report: bringing its thin slices onto the
reference grid, the file hand-off and its geometry, and what happens when it is missing or fails. ECLARE itself
(a GPL-3.0 program in its own environment, hours on a CPU at its defaults) is run by `make eval-real`; here a
small stand-in program answers as run-eclare does (the input's extent in slices as thin as its pixels)."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from MedGANLogic.errors import InputError
from MedGANLogic.evaluation import peers
from MedGANLogic.simulate.lowres import superres_pair
from MedGANLogic.volume import Volume


def test_rebin_averages_each_coarse_slice_over_its_span():
    fine = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)  # slices 0..5, 1 mm
    out = peers.rebin_slices(fine, np.arange(7.0), np.array([0.0, 2.0, 4.0, 6.0]))
    assert np.allclose(out[:, 0, 0], [0.5, 2.5, 4.5])  # pairs averaged
    out = peers.rebin_slices(fine, np.arange(7.0), np.array([0.5, 3.0]))  # half of slice 0, slices 1 and 2
    assert out[0, 0, 0] == pytest.approx((0.5 * 0 + 1 + 2) / 2.5)
    with pytest.raises(ValueError, match="outside"):
        peers.rebin_slices(fine, np.arange(7.0), np.array([7.0, 8.0]))


def test_eclare_missing_is_named_with_its_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv(peers.ENV, str(tmp_path / "nothing-here"))
    assert peers.eclare_command() is None
    low = Volume(np.ones((4, 8, 8), np.float32), spacing=(1.0, 1.0, 4.0))
    with pytest.raises(InputError, match="make peers"):
        peers.eclare_superres(low, Volume(np.ones((8, 8, 8), np.float32)), patches=128)


STAND_IN = '''
import argparse, pathlib, SimpleITK as sitk, numpy as np
p = argparse.ArgumentParser()
for a in ("--in-fpath", "--out-dir", "--n-patches", "--gpu-id"):
    p.add_argument(a)
args = p.parse_args()
{body}
'''
ANSWER = '''
im = sitk.ReadImage(args.in_fpath)
a = sitk.GetArrayFromImage(im)
r = int(round(im.GetSpacing()[2] / im.GetSpacing()[0]))
out = sitk.GetImageFromArray(np.repeat(a, r, axis=0))  # slices as thin as the pixels, over the same extent
sp = im.GetSpacing()
out.SetSpacing((sp[0], sp[1], sp[2] / r))
out.SetDirection(im.GetDirection())
d = np.array(im.GetDirection()).reshape(3, 3)
out.SetOrigin(tuple(np.array(im.GetOrigin()) + d[:, 2] * (sp[2] / r - sp[2]) / 2))  # first thin slice's centre
pathlib.Path(args.out_dir).mkdir(parents=True)
sitk.WriteImage(out, str(pathlib.Path(args.out_dir) / "low_eclare.nii.gz"))
'''


def _program(tmp_path, body):
    path = tmp_path / "run-eclare"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(STAND_IN.format(body=body)))
    path.chmod(0o755)
    return path


def test_eclare_output_is_brought_onto_the_reference_slices(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    angle = np.deg2rad(30)  # an oblique acquisition: slice axis tilted in y-z
    direction = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    real = Volume(rng.random((12, 6, 5)).astype(np.float32), spacing=(1.0, 1.0, 2.0), origin=(3.0, -4.0, 7.0),
                  direction=direction)
    low, grid = superres_pair(real, (2, 1, 1), "thick_slices")  # 4 mm slices over the 2 mm grid
    monkeypatch.setenv(peers.ENV, str(_program(tmp_path, ANSWER)))
    result = peers.eclare_superres(low, grid, patches=256)
    # each 4 mm slice repeated into four 1 mm slices, then averaged over each 2 mm reference slice: the input back
    assert result.array.shape == grid.shape and result.patches == 256 and result.device == "cpu"
    assert np.allclose(result.array, np.repeat(low.array, 2, axis=0), atol=1e-5)
    assert result.seconds > 0
    assert np.array_equal(low.array, superres_pair(real, (2, 1, 1), "thick_slices")[0].array)  # input untouched


def test_eclare_failure_or_a_wrong_answer_is_an_error(tmp_path, monkeypatch):
    low, grid = superres_pair(Volume(np.ones((8, 6, 5), np.float32), spacing=(1.0, 1.0, 2.0)), (2, 1, 1),
                              "thick_slices")
    (tmp_path / "a").mkdir()
    monkeypatch.setenv(peers.ENV, str(_program(tmp_path / "a", "raise SystemExit('out of memory')")))
    with pytest.raises(RuntimeError, match="run-eclare failed.*out of memory"):
        peers.eclare_superres(low, grid, patches=128)
    wrong = ANSWER.replace("np.repeat(a, r, axis=0)", "np.repeat(a, r, axis=0)[:, :-1]")  # loses a row
    (tmp_path / "b").mkdir()
    monkeypatch.setenv(peers.ENV, str(_program(tmp_path / "b", wrong)))
    with pytest.raises(RuntimeError, match="in-plane shape"):
        peers.eclare_superres(low, grid, patches=128)
    with pytest.raises(InputError, match="thickest spacing"):
        peers.eclare_superres(Volume(low.array, spacing=(4.0, 1.0, 1.0)), grid, patches=128)  # thick along x
