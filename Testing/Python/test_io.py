import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedGANLogic.errors import InputError
from MedGANLogic.io import read_volume, write_volume


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


def test_dicom_series_is_read_in_hounsfield_units(tmp_path):
    hu = np.full((4, 16, 16), -1000, np.int16)
    hu[:, 4:12, 4:12] = 40
    hu[:, 6:8, 6:8] = 1200
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(hu.shape[0]):
        # GDCM stores HU - intercept (HU + 1024) and writes Rescale Intercept -1024, as scanners do
        sl = sitk.GetImageFromArray(hu[k])
        sl.SetSpacing((0.7, 0.7))
        for tag, value in {"0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": "1.2.3.4",
                           "0020|0032": f"0\\0\\{2.5 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0013": str(k + 1), "0028|1052": "-1024", "0028|1053": "1",
                           "0018|0050": "2.5"}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    stored = np.frombuffer((tmp_path / "slice000.dcm").read_bytes()[-2:], np.uint16)[0]
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
