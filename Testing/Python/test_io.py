import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO

from MedGANLogic import staging
from MedGANLogic.errors import InputError, MedGANWarning
from MedGANLogic.io import (
    check_orthonormal,
    check_output_paths,
    describe,
    from_volume,
    read_volume,
    write_volume,
    write_volumes,
)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_geometry_and_voxels(tmp_path, oblique_volume, suffix):
    path = write_volume(oblique_volume, tmp_path / f"vol{suffix}")
    back = read_volume(path)
    assert back.shape == oblique_volume.shape
    assert np.allclose(back.spacing, oblique_volume.spacing, atol=1e-6)
    assert np.allclose(back.origin, oblique_volume.origin, atol=1e-5)
    assert np.allclose(back.direction, oblique_volume.direction, atol=1e-6)
    assert np.array_equal(back.array, oblique_volume.array)
    # nothing but the file (and the raw data of MHD) is left in the folder
    leftovers = {p.name for p in tmp_path.iterdir()} - {path.name}
    assert leftovers <= ({"vol.raw", "vol.zraw"} if suffix == ".mhd" else set())


def test_provenance_travels_in_header_and_nifti_sidecar(tmp_path, oblique_volume):
    provenance = {"model": "m", "weights_sha256": "ab"}
    vol = oblique_volume.with_array(oblique_volume.array, metadata={"synthetic": True, "provenance": provenance})
    back = read_volume(write_volume(vol, tmp_path / "out.nrrd"))
    assert back.metadata["provenance"]["model"] == "m" and back.metadata["synthetic"]
    write_volume(vol, tmp_path / "out.nii.gz")
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["synthetic"] is True and side["MedGAN"]["weights_sha256"] == "ab"
    assert "synthetic" in sitk.ReadImage(str(tmp_path / "out.nii.gz")).GetMetaData("descrip")


def write_ct_series(folder, hu, series_uid="1.2.3.4", description="", z0=0.0):
    """Write ``hu`` (z, y, x) as one DICOM CT series; GDCM stores HU + 1024 with Rescale Intercept -1024."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(hu.shape[0]):
        sl = sitk.GetImageFromArray(hu[k])
        sl.SetSpacing((0.7, 0.7))
        for tag, value in {"0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": series_uid,
                           "0008|103e": description, "0008|0018": f"{series_uid}.{k + 1}",
                           "0020|0032": f"0\\0\\{z0 + 2.5 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0013": str(k + 1), "0028|1052": "-1024", "0028|1053": "1",
                           "0018|0050": "2.5"}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}_{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_is_read_in_hounsfield_units(tmp_path):
    hu = np.full((4, 16, 16), -1000, np.int16)
    hu[:, 4:12, 4:12] = 40
    hu[:, 6:8, 6:8] = 1200
    write_ct_series(tmp_path, hu)
    stored = np.frombuffer((tmp_path / "1.2.3.4_000.dcm").read_bytes()[-2:], np.uint16)[0]
    assert stored == hu[0, -1, -1] + 1024  # the file holds raw values, not HU
    vol = read_volume(tmp_path)
    assert vol.metadata["modality"] == "CT" and vol.metadata["units"] == "HU"
    assert vol.shape == hu.shape
    assert np.allclose(vol.array, hu)
    assert np.allclose(vol.spacing, (0.7, 0.7, 2.5), atol=1e-4)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_volume(tmp_path / "nope.nii.gz")


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="Cannot read"):
        read_volume(bad)


def test_2d_image_is_refused(tmp_path):
    sitk.WriteImage(sitk.Image(20, 20, sitk.sitkFloat32), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="2D image"):
        read_volume(tmp_path / "flat.nrrd")


def test_4d_image_needs_a_frame(tmp_path):
    import nibabel as nib  # writes a true 4D NIfTI, as fMRI/DWI/perfusion series come

    arr = np.random.default_rng(0).random((3, 5, 6, 7)).astype(np.float32)  # (t, z, y, x)
    nib.save(nib.Nifti1Image(arr.transpose(3, 2, 1, 0), np.eye(4)), str(tmp_path / "series.nii.gz"))
    with pytest.raises(InputError, match=r"4D with 3 frames.*frame=0\.\.2"):
        read_volume(tmp_path / "series.nii.gz")
    vol = read_volume(tmp_path / "series.nii.gz", frame=2)
    assert np.array_equal(vol.array, arr[2])


def test_vector_image_needs_a_component(tmp_path):
    arr = np.random.default_rng(0).random((5, 6, 7, 3)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=True), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match=r"3 components.*component=0\.\.2"):
        read_volume(tmp_path / "rgb.nrrd")
    assert np.array_equal(read_volume(tmp_path / "rgb.nrrd", component=1).array, arr[..., 1])


def test_failed_write_leaves_nothing(tmp_path, oblique_volume, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError):
        write_volume(oblique_volume, tmp_path / "out.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_unknown_output_extension(tmp_path, oblique_volume):
    with pytest.raises(InputError, match="extension"):
        write_volume(oblique_volume, tmp_path / "out.png")


# --- an output never replaces an input; several outputs are written all or nothing (issue 13: 1-3) -------------
def _synthetic_output_of(volume, source):
    """What MedGANLogic.run returns for an input read from ``source``: the input's metadata + provenance."""
    return volume.with_array(volume.array + 1, metadata={"source": str(source), "synthetic": True,
                                                         "provenance": {"input": str(source)}})


@pytest.mark.parametrize("link", ["same path", "symlink", "hardlink"])
def test_an_output_is_never_written_over_its_input(tmp_path, oblique_volume, link):
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    before = src.read_bytes()
    target = {"same path": src, "symlink": tmp_path / "alias.nrrd", "hardlink": tmp_path / "twin.nrrd"}[link]
    if link == "symlink":
        target.symlink_to(src)
    elif link == "hardlink":
        os.link(src, target)
    out = _synthetic_output_of(read_volume(src), src)
    with pytest.raises(InputError, match="is the input"):
        write_volume(out, target)
    with pytest.raises(InputError, match="is the input"):  # a plain volume, the input given explicitly
        write_volume(oblique_volume, target, source=src)
    with pytest.raises(InputError, match="is the input"):  # the check the command line and Slicer call first
        check_output_paths([target], inputs=[src])
    assert src.read_bytes() == before


def test_an_output_that_would_replace_the_data_file_of_an_input_header_is_refused(tmp_path, oblique_volume):
    sitk.WriteImage(from_volume(oblique_volume), str(tmp_path / "t1.nhdr"), useCompression=False)  # + t1.raw
    assert (tmp_path / "t1.raw").is_file()
    with pytest.raises(InputError, match="t1.raw.*is the input"):  # t1.mhd would write its voxels to t1.raw
        check_output_paths([tmp_path / "t1.mhd"], inputs=[tmp_path / "t1.nhdr"])
    check_output_paths([tmp_path / "t1_out.mhd"], inputs=[tmp_path / "t1.nhdr"])  # t1_out.raw: fine


@pytest.mark.parametrize("second", ["out.nrrd", "./out.nrrd", "out.nii", "alias.nrrd"])
def test_clashing_output_paths_are_refused(tmp_path, oblique_volume, second):
    first = tmp_path / ("out.nii.gz" if second == "out.nii" else "out.nrrd")  # out.nii.gz and out.nii: out.json
    if second == "alias.nrrd":
        first.write_bytes(b"old")
        (tmp_path / second).symlink_to(first)
    other = f"{tmp_path}/{second}"  # a string: "./out.nrrd" stays a key of its own
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError, match="same file"):
        check_output_paths([first, other])
    if str(first) != other:
        with pytest.raises(InputError, match="same file"):
            write_volumes({str(first): oblique_volume, other: oblique_volume})
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_failed_write_keeps_every_old_output(tmp_path, oblique_volume, monkeypatch):
    image, mask = tmp_path / "map.nrrd", tmp_path / "mask.nii.gz"
    image.write_bytes(b"old map")
    mask.write_bytes(b"old mask")
    real = sitk.WriteImage

    def fail_on_mask(img, path, *args, **kwargs):
        if Path(path).name.startswith("mask"):
            raise RuntimeError("disk full")
        return real(img, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", fail_on_mask)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volumes({image: oblique_volume, mask: oblique_volume})
    assert image.read_bytes() == b"old map" and mask.read_bytes() == b"old mask"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nrrd", "mask.nii.gz"]


def test_a_failed_rename_puts_the_old_outputs_back(tmp_path, oblique_volume, monkeypatch):
    from MedGANLogic import staging

    first, second = tmp_path / "a.nrrd", tmp_path / "b.nrrd"
    first.write_bytes(b"old a")
    real_replace, renamed = os.replace, []

    def fail_on_second_output(src, dst):
        if Path(dst) == second:
            raise OSError("no space left on device")
        renamed.append(Path(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(staging.os, "replace", fail_on_second_output)
    with pytest.raises(OSError, match="no space"):
        write_volumes({first: oblique_volume, second: oblique_volume})
    assert first in renamed  # a.nrrd had been replaced by the new one ...
    assert first.read_bytes() == b"old a" and not second.exists()  # ... and is back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nrrd"]


def test_write_volumes_writes_every_output(tmp_path, oblique_volume):
    mask = oblique_volume.with_array((oblique_volume.array > 300).astype(np.uint8))
    paths = write_volumes({tmp_path / "map.nii.gz": oblique_volume, tmp_path / "mask.nrrd": mask})
    assert paths == [tmp_path / "map.nii.gz", tmp_path / "mask.nrrd"]
    assert np.array_equal(read_volume(paths[1]).array, mask.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz", "mask.nrrd"]


# --- a run killed with SIGKILL leaves its stage behind: the next write cleans it (issue 13: 14) ------------------
def _stage_names(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".medgan-"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is a POSIX signal")
def test_the_stage_of_a_killed_write_is_cleaned_by_the_next_write(tmp_path, oblique_volume):
    script = (
        "import sys, time, numpy as np, SimpleITK as sitk\n"
        "from MedGANLogic.io import write_volume\nfrom MedGANLogic.volume import Volume\n"
        "def stall(image, path, *a, **k):\n"
        "    open(path, 'wb').write(b'half a volume')\n    print('staged', flush=True)\n    time.sleep(600)\n"
        "sitk.WriteImage = stall\nwrite_volume(Volume(np.zeros((2, 3, 4))), sys.argv[1])\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.nrrd")], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "staged"
    finally:
        proc.kill()
        proc.wait()
    left = _stage_names(tmp_path)
    assert len(left) == 1  # what SIGKILL leaves behind
    # a concurrent writer's fresh stage (this process: alive) and files that only look similar are kept
    live = tmp_path / f".medgan-{os.getpid()}-abcdefgh"
    live.mkdir()
    lookalikes = [tmp_path / ".medgan-notes", tmp_path / ".medgan-123-abc"]
    for p in lookalikes:
        p.mkdir()
    write_volume(oblique_volume, tmp_path / "next.nrrd")
    assert left[0] in _stage_names(tmp_path)  # just killed: kept until it has been idle a while
    stale = time.time() - 2 * staging.DEAD_OWNER_IDLE_S
    for p in [tmp_path / left[0], *(tmp_path / left[0]).iterdir()]:
        os.utime(p, (stale, stale))
    write_volume(oblique_volume, tmp_path / "next.nrrd")
    assert _stage_names(tmp_path) == sorted([live.name] + [p.name for p in lookalikes])
    assert (tmp_path / "next.nrrd").is_file() and not (tmp_path / "out.nrrd").exists()


def test_a_stage_idle_for_long_is_cleaned_even_if_its_pid_is_alive(tmp_path, oblique_volume):
    old = tmp_path / f".medgan-{os.getpid()}-zzzzzzzz"  # a reused PID: alive, but the stage is ancient
    old.mkdir()
    (old / "out.nrrd").write_bytes(b"partial")
    ancient = time.time() - 2 * staging.STALE_AFTER_S
    for p in (old / "out.nrrd", old):
        os.utime(p, (ancient, ancient))
    write_volume(oblique_volume, tmp_path / "out.nrrd")
    assert _stage_names(tmp_path) == []


# --- files that lie about themselves (issue 13: 4-6) ----------------------------------------------------------
def _nifti(tmp_path, array_zyx, name="v.nii", affine=None):
    import nibabel as nib

    path = tmp_path / name
    nib.save(nib.Nifti1Image(array_zyx.transpose(2, 1, 0), np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.mark.parametrize("how", ["cut .nii", "cut .nii.gz", "short data in a whole .nii.gz"])
def test_a_truncated_nifti_is_refused(tmp_path, how):
    import gzip

    array = np.random.default_rng(0).random((6, 10, 12)).astype(np.float32)
    raw = _nifti(tmp_path, array).read_bytes()
    if how == "cut .nii":
        path = tmp_path / "cut.nii"
        path.write_bytes(raw[:-1000])
    elif how == "cut .nii.gz":
        path = tmp_path / "cut.nii.gz"
        whole = gzip.compress(raw)
        path.write_bytes(whole[: len(whole) // 2])
    else:
        path = tmp_path / "short.nii.gz"
        path.write_bytes(gzip.compress(raw[:-1000]))
    with pytest.raises(InputError, match=r"truncated.*\d+ bytes.*header") as err:
        read_volume(path)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_in_a_nifti_are_read_as_they_are_not_zero(tmp_path, dtype):
    array = np.random.default_rng(0).random((6, 10, 12)).astype(dtype)
    array[2, 3, 4] = array[5, 9, 11] = np.nan
    array[0, 0, 0], array[1, 2, 3] = np.inf, -np.inf
    for name in ("nan.nii", "nan.nii.gz"):
        vol = read_volume(_nifti(tmp_path, array, name))
        assert np.array_equal(vol.array, array.astype(np.float32), equal_nan=True)
        assert describe(vol)["non_finite_voxels"] == 4


def test_a_nifti_with_integer_voxels_is_read_unchanged(tmp_path):
    array = np.arange(6 * 10 * 12, dtype=np.int16).reshape(6, 10, 12)
    for name in ("int.nii", "int.nii.gz"):
        assert np.array_equal(read_volume(_nifti(tmp_path, array, name)).array, array)


def test_a_dicom_folder_with_several_series_says_which_it_uses(tmp_path):
    write_ct_series(tmp_path, np.zeros((5, 8, 8), np.int16), "1.2.3.4", "abdomen")
    write_ct_series(tmp_path, np.full((2, 8, 8), 100, np.int16), "1.2.3.9", "scout")
    with pytest.warns(MedGANWarning, match=r"2 DICOM series.*1\.2\.3\.4 \(5 slices, abdomen\).*1\.2\.3\.9 \(2 slices, "
                                         r"scout\).*--series"):
        vol = read_volume(tmp_path)
    assert vol.shape == (5, 8, 8) and vol.metadata["dicom_series"] == "1.2.3.4"
    picked = read_volume(tmp_path, series="1.2.3.9")
    assert picked.shape == (2, 8, 8) and np.allclose(picked.array, 100)
    with pytest.raises(InputError, match=r"no DICOM series 9\.9.*1\.2\.3\.4.*1\.2\.3\.9"):
        read_volume(tmp_path, series="9.9")


def test_one_dicom_series_reads_without_a_warning(tmp_path, recwarn):
    write_ct_series(tmp_path, np.zeros((3, 8, 8), np.int16))
    read_volume(tmp_path)
    assert not [w for w in recwarn if "DICOM" in str(w.message)]


def test_a_sheared_direction_is_refused(tmp_path, oblique_volume):
    image = from_volume(oblique_volume)
    image.SetDirection((1, 0.3, 0, 0, 1, 0, 0, 0, 1))  # NRRD stores it; ITK reads it back sheared
    sitk.WriteImage(image, str(tmp_path / "sheared.nrrd"))
    with pytest.raises(InputError, match=r"not orthonormal.*[Rr]esample"):
        read_volume(tmp_path / "sheared.nrrd")
    with pytest.raises(InputError, match="not orthonormal"):
        check_orthonormal(np.array([[1, 0.3, 0], [0, 1, 0], [0, 0, 1]]), "volume")
    check_orthonormal(oblique_volume.direction, "volume")  # a rotation is fine
