"""Read and write volumes through SimpleITK: NIfTI, NRRD, MHA/MHD, and DICOM series folders (read).

Every reader returns a :class:`~MedGANLogic.volume.Volume`; every writer is atomic (a temporary file in the
same folder, then a rename), so a failed write never leaves a half-written file behind.

Provenance travels with the file: NRRD and MHA/MHD keep it as a ``MedGAN_provenance`` header field; NIfTI,
whose header has no room for it, gets the 80-character ``descrip`` note plus a JSON sidecar of the same name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .volume import Volume

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
PROVENANCE_KEY = "MedGAN_provenance"
SYNTHETIC_NOTE = "MedGAN synthetic image - research only, not for diagnosis"


def file_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _dicom_series(folder: Path) -> list[str]:
    reader = sitk.ImageSeriesReader
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder} is a folder but holds no DICOM series; point --input at a volume file "
                         f"(.nii.gz, .nrrd, .mha) or at a folder of DICOM slices.")
    if len(series) > 1:
        # Largest series first: a localiser or a dose report rarely has the most slices.
        series = sorted(series, key=lambda s: -len(reader.GetGDCMSeriesFileNames(str(folder), s)))
    return list(reader.GetGDCMSeriesFileNames(str(folder), series[0]))


def _modality_from_dicom(path: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    try:
        r = sitk.ImageFileReader()
        r.SetFileName(path)
        r.ReadImageInformation()
        if r.HasMetaDataKey("0008|0060"):
            modality = r.GetMetaData("0008|0060").strip().upper()
            meta["modality"] = modality
            if modality == "CT":
                meta["units"] = "HU"
    except RuntimeError:
        pass
    return meta


def read_image(path: str | os.PathLike) -> tuple[sitk.Image, dict[str, Any]]:
    """Read a file or DICOM folder as a SimpleITK image (float32 intensities, rescale slope/intercept applied)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"Input not found: {p}. Check the path (and that a network drive is mounted).")
    meta: dict[str, Any] = {"source": str(p)}
    try:
        if p.is_dir():
            files = _dicom_series(p)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()  # GDCM applies Rescale Slope/Intercept: CT comes back in HU
            meta.update(_modality_from_dicom(files[0]))
        else:
            image = sitk.ReadImage(str(p))
            if file_suffix(p) == ".dcm":
                meta.update(_modality_from_dicom(str(p)))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise InputError(f"Cannot read {p}: {first}. Supported: {', '.join(READ_SUFFIXES)} files or a DICOM "
                         f"series folder.") from exc
    for key in image.GetMetaDataKeys():
        if key == PROVENANCE_KEY:
            try:
                meta["provenance"] = json.loads(image.GetMetaData(key))
                meta["synthetic"] = True
                described = meta["provenance"].get("output") if isinstance(meta["provenance"], dict) else None
                if isinstance(described, dict):  # a MedGAN output: what it is (modality, contrast, units, kind)
                    meta.update({k: v for k, v in described.items() if k in ("modality", "contrast", "units")})
            except ValueError:
                pass
    return image, meta


def to_volume(image: sitk.Image, metadata: dict[str, Any] | None = None, *, component: int | None = None,
              frame: int | None = None, name: str = "input") -> Volume:
    """Convert a SimpleITK image to a scalar 3D Volume, with a clear error for 2D, 4D and vector images."""
    if image.GetNumberOfComponentsPerPixel() > 1:
        n = image.GetNumberOfComponentsPerPixel()
        if component is None:
            raise InputError(f"{name} is a vector image with {n} components per voxel (e.g. RGB or a displacement "
                             f"field); MedGAN needs one scalar value per voxel. Pick one with component=0..{n - 1} "
                             f"(--component on the command line).")
        if not 0 <= component < n:
            raise InputError(f"component={component} is out of range: {name} has components 0..{n - 1}.")
        image = sitk.VectorIndexSelectionCast(image, component)
    dim = image.GetDimension()
    if dim == 4:
        frames = image.GetSize()[3]
        if frame is None:
            raise InputError(f"{name} is 4D with {frames} frames (a time series or multi-echo volume); MedGAN needs "
                             f"one 3D volume. Pick one with frame=0..{frames - 1} (--frame on the command line).")
        if not 0 <= frame < frames:
            raise InputError(f"frame={frame} is out of range: {name} has frames 0..{frames - 1}.")
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, frame])
    elif dim == 2:
        raise InputError(f"{name} is a 2D image (size {image.GetSize()}); MedGAN works on 3D volumes. Load the "
                         f"whole series (a DICOM folder) or a 3D file.")
    elif dim != 3:
        raise InputError(f"{name} has {dim} dimensions; MedGAN needs a 3D scalar volume.")
    size = image.GetSize()
    if min(size) < 1:
        raise InputError(f"{name} is empty (size {size}).")
    array = sitk.GetArrayFromImage(image)
    if not (metadata and metadata.get("kind") == "labels" and np.issubdtype(array.dtype, np.integer)):
        array = array.astype(np.float32, copy=False)
    return Volume(array, spacing=image.GetSpacing(), origin=image.GetOrigin(),
                  direction=np.array(image.GetDirection()).reshape(3, 3), metadata=dict(metadata or {}))


def read_volume(path: str | os.PathLike, *, component: int | None = None, frame: int | None = None,
                metadata: dict[str, Any] | None = None) -> Volume:
    """Read a NIfTI/NRRD/MHA/MHD file or a DICOM series folder into a :class:`Volume`.

    ``metadata`` (e.g. ``{"modality": "MR", "contrast": "T1w"}``) is merged over what the file says.
    """
    image, meta = read_image(path)
    meta.update(metadata or {})
    return to_volume(image, meta, component=component, frame=frame, name=str(path))


def from_volume(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the Volume's voxels and geometry (metadata not included)."""
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.ravel()))
    return image


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``volume`` to ``path`` atomically; provenance goes into the header (or a NIfTI sidecar)."""
    p = Path(path)
    suffix = file_suffix(p)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"Cannot write {p.name}: unknown extension {suffix!r}. "
                         f"Use one of {', '.join(WRITE_SUFFIXES)}.")
    if not p.parent.exists():
        raise InputError(f"Output folder {p.parent} does not exist; create it first.")
    image = from_volume(volume)
    provenance = volume.metadata.get("provenance")
    sidecar = None
    if volume.metadata.get("synthetic"):
        image.SetMetaData("ITK_FileNotes", SYNTHETIC_NOTE[:79])
    if provenance is not None:
        text = json.dumps(provenance, default=_json_default, sort_keys=True)
        if suffix in (".nii", ".nii.gz"):
            sidecar = p.with_name(p.name[: -len(suffix)] + ".json")
        else:
            image.SetMetaData(PROVENANCE_KEY, text)
    # Write under temporary names in the target folder, then rename: a failure leaves nothing behind.
    stage = Path(tempfile.mkdtemp(prefix=f".medgan-{p.name}.", dir=p.parent))
    try:
        staged = stage / p.name
        sitk.WriteImage(image, str(staged), useCompression=compress)
        if sidecar is not None:
            (stage / sidecar.name).write_text(json.dumps({"MedGAN": provenance, "synthetic": True,
                                                          "note": SYNTHETIC_NOTE}, default=_json_default, indent=2))
        # Data files (MHD's .raw/.zraw, the NIfTI sidecar) first, the file the user asked for last.
        for f in sorted(stage.iterdir(), key=lambda f: f.name == p.name):
            os.replace(f, p.parent / f.name)
    finally:
        for f in stage.iterdir():
            f.unlink()
        stage.rmdir()
    return p


def describe(volume: Volume) -> dict[str, Any]:
    """Shape, geometry and intensity range, as `medgan info` prints them."""
    a = volume.array
    finite = np.isfinite(a)
    return {
        "shape_zyx": list(volume.shape),
        "spacing_xyz_mm": [round(s, 6) for s in volume.spacing],
        "origin_xyz_lps_mm": [round(o, 6) for o in volume.origin],
        "direction": [[round(float(v), 6) for v in row] for row in volume.direction],
        "dtype": str(a.dtype),
        "min": float(a[finite].min()) if finite.any() else None,
        "max": float(a[finite].max()) if finite.any() else None,
        "mean": float(a[finite].mean()) if finite.any() else None,
        "non_finite_voxels": int((~finite).sum()),
        "metadata": {k: v for k, v in volume.metadata.items() if k != "provenance"},
    }
