"""Read and write volumes through SimpleITK: NIfTI, NRRD, MHA/MHD, and DICOM series folders (read).

Every reader returns a :class:`~MedGANLogic.volume.Volume`; every writer is atomic (a temporary file in the
same folder, then a rename; :mod:`MedGANLogic.staging`), so a failed write never leaves a half-written file behind,
and :func:`write_volumes` writes several files all or nothing. An output is never written over an input.

Refused on reading (each with a one-line :class:`InputError` saying what to do): a NIfTI file shorter than its
header says, a sheared (non-orthonormal) direction matrix, a DICOM series that is not in the folder. NaN and
infinite voxels of a float NIfTI are read as they are (ITK alone reads them as 0). A DICOM folder with several
series gives the largest, with a warning naming the others and how to pick one.

Provenance travels with the file: NRRD and MHA/MHD keep it as a ``MedGAN_provenance`` header field; NIfTI,
whose header has no room for it, gets the 80-character ``descrip`` note plus a JSON sidecar of the same name.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import InputError, MedGANWarning
from .nifti import check_nifti
from .staging import staged_write
from .volume import Volume

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")
PROVENANCE_KEY = "MedGAN_provenance"
SYNTHETIC_NOTE = "MedGAN synthetic image - research only, not for diagnosis"


def file_suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _dicom_tag(path: str, tag: str) -> str:
    r = sitk.ImageFileReader()
    r.SetFileName(path)
    try:
        r.ReadImageInformation()
    except RuntimeError:
        return ""
    return r.GetMetaData(tag).strip() if r.HasMetaDataKey(tag) else ""


def _dicom_series(folder: Path, series: str | None = None) -> tuple[list[str], str]:
    """The files of one DICOM series in ``folder`` and its UID: ``series``, or the one with the most slices.

    Several series and none chosen: a warning names the one used, the others, and how to pick another.
    """
    reader = sitk.ImageSeriesReader
    uids = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not uids:
        raise InputError(f"{folder} is a folder but holds no DICOM series; point --input at a volume file "
                         f"(.nii.gz, .nrrd, .mha) or at a folder of DICOM slices.")
    files = {uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}

    def described(uid: str) -> str:
        text = ", ".join(t for t in (f"{len(files[uid])} slices", _dicom_tag(files[uid][0], "0008|103e")) if t)
        return f"{uid} ({text})"

    if series is not None:
        if series not in files:
            raise InputError(f"{folder} holds no DICOM series {series}; it holds "
                             f"{'; '.join(described(u) for u in uids)}. Pick one of these with --series UID "
                             f"(series= in read_volume).")
        return files[series], series
    # Largest series: a localiser or a dose report rarely has the most slices.
    chosen = max(uids, key=lambda uid: len(files[uid]))
    if len(uids) > 1:
        others = "; ".join(described(u) for u in uids if u != chosen)
        warnings.warn(f"{folder} holds {len(uids)} DICOM series; using the largest, {described(chosen)}. "
                      f"The others: {others}. Pick another with --series UID (series= in read_volume).",
                      MedGANWarning, stacklevel=4)
    return files[chosen], chosen


def _modality_from_dicom(path: str) -> dict[str, Any]:
    modality = _dicom_tag(path, "0008|0060").upper()
    if not modality:
        return {}
    return {"modality": modality, "units": "HU"} if modality == "CT" else {"modality": modality}


def _restore_non_finite(image: sitk.Image, mask: np.ndarray, values: np.ndarray, path: Path) -> sitk.Image:
    """``image`` with the NaN and +-inf the file stores where ITK's NIfTI reader put 0."""
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetNumberOfPixels() != mask.size:
        raise InputError(f"{path} stores {int(mask.sum())} NaN or infinite voxels, which ITK reads as 0; replace "
                         f"them with a value (e.g. the background) before running MedGAN.")
    array = sitk.GetArrayFromImage(image)
    array.reshape(-1)[mask] = values  # NIfTI and ITK's array both run x fastest
    restored = sitk.GetImageFromArray(array)
    restored.CopyInformation(image)
    for key in image.GetMetaDataKeys():
        restored.SetMetaData(key, image.GetMetaData(key))
    return restored


def read_image(path: str | os.PathLike, *, series: str | None = None) -> tuple[sitk.Image, dict[str, Any]]:
    """Read a file or DICOM folder as a SimpleITK image (float32 intensities, rescale slope/intercept applied).

    ``series``: the SeriesInstanceUID to read from a DICOM folder holding several (default: the largest, with a
    warning listing the others).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"Input not found: {p}. Check the path (and that a network drive is mounted).")
    meta: dict[str, Any] = {"source": str(p)}
    if series is not None and not p.is_dir():
        raise InputError(f"series={series!r} (--series) applies to a DICOM folder; {p} is a file.")
    try:
        if p.is_dir():
            files, meta["dicom_series"] = _dicom_series(p, series)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()  # GDCM applies Rescale Slope/Intercept: CT comes back in HU
            meta.update(_modality_from_dicom(files[0]))
        else:
            non_finite = check_nifti(p) if file_suffix(p) in (".nii", ".nii.gz") else None
            image = sitk.ReadImage(str(p))
            if non_finite is not None:
                image = _restore_non_finite(image, *non_finite, p)
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


def check_orthonormal(direction: np.ndarray, name: str = "volume", atol: float = 1e-4) -> None:
    """Refuse a direction matrix whose axes are not orthogonal unit vectors (a sheared grid).

    A sheared grid (e.g. CT with gantry tilt stored as is) cannot be shown or resampled consistently by most
    tools, and an output would copy it. ``atol`` bounds ``|D^T D - I|`` (files store directions in float32).
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    error = float(np.abs(d.T @ d - np.eye(3)).max())
    if error > atol:
        raise InputError(f"{name} has a direction matrix that is not orthonormal (its axes are sheared or scaled; "
                         f"|D^T D - I| = {error:.3g}). Resample it onto an orthogonal grid first (3D Slicer: Resample "
                         f"Scalar Volume, or the DICOM module's gantry tilt correction for tilted CT; SimpleITK: "
                         f"sitk.Resample).")


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
    check_orthonormal(np.array(image.GetDirection()).reshape(3, 3), name)
    array = sitk.GetArrayFromImage(image)
    if not (metadata and metadata.get("kind") == "labels" and np.issubdtype(array.dtype, np.integer)):
        array = array.astype(np.float32, copy=False)
    return Volume(array, spacing=image.GetSpacing(), origin=image.GetOrigin(),
                  direction=np.array(image.GetDirection()).reshape(3, 3), metadata=dict(metadata or {}))


def read_volume(path: str | os.PathLike, *, component: int | None = None, frame: int | None = None,
                metadata: dict[str, Any] | None = None, series: str | None = None) -> Volume:
    """Read a NIfTI/NRRD/MHA/MHD file or a DICOM series folder into a :class:`Volume`.

    ``metadata`` (e.g. ``{"modality": "MR", "contrast": "T1w"}``) is merged over what the file says. ``series``
    picks a SeriesInstanceUID in a DICOM folder holding several (default: the largest, with a warning).
    """
    image, meta = read_image(path, series=series)
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


def _companions(path: Path) -> list[Path]:
    """Files written with ``path``: MHD's voxel data (``.raw``/``.zraw``), NIfTI's provenance sidecar (``.json``)."""
    suffix = file_suffix(path)
    stem = path.name[: -len(suffix)]
    if suffix == ".mhd":
        return [path.with_name(stem + ".raw"), path.with_name(stem + ".zraw")]
    if suffix in (".nii", ".nii.gz"):
        return [path.with_name(stem + ".json")]
    return []


def _input_files(path: Path) -> list[Path]:
    """An input file and, for a detached header (``.mhd``, ``.nhdr``), the data file it names."""
    if not path.is_file():
        return []
    files = [path]
    suffix = file_suffix(path)
    if suffix in (".mhd", ".nhdr"):
        with open(path, "rb") as f:
            text = f.read(1 << 16).decode("latin-1")
        for line in text.splitlines():
            key, sep, value = line.partition("=" if suffix == ".mhd" else ":")
            if sep and key.strip().lower().replace(" ", "") in ("elementdatafile", "datafile"):
                value = value.strip()
                if value and value.upper() not in ("LOCAL", "LIST") and "%" not in value and " " not in value:
                    files.append(path.parent / value)
    return files


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_output_paths(outputs: Iterable[str | os.PathLike],
                       inputs: Iterable[str | os.PathLike | None] = ()) -> list[Path]:
    """Check output paths before any work is done; return them as Paths.

    Refused (:class:`InputError`): an unknown extension, a missing folder, a folder given as a file, two outputs
    that would write the same file (also through links, or a NIfTI sidecar / MHD data file they would share), and
    an output that is an input or the data file of an input header (same path, symbolic or hard link).
    ``inputs`` may hold paths that are not files (a DICOM folder, a Slicer node's name): they are skipped.
    The command line calls this before it reads the input; 3D Slicer can call it before saving a result.
    """
    paths = [Path(p) for p in outputs]
    for p in paths:
        suffix = file_suffix(p)
        if suffix not in WRITE_SUFFIXES:
            raise InputError(f"Cannot write {p.name}: unknown extension {suffix!r}. "
                             f"Use one of {', '.join(WRITE_SUFFIXES)}.")
        if not p.parent.is_dir():
            raise InputError(f"Output folder {p.parent} does not exist; create it first.")
        if p.is_dir():
            raise InputError(f"Output {p} is a folder; give a file name inside it.")
    claimed: list[tuple[Path, Path]] = []  # (a file some output writes, that output)
    for p in paths:
        for f in [p, *_companions(p)]:
            for other, owner in claimed:
                if _same_file(f, other):
                    shared = (f, other) == (p, owner)
                    what = "are the same file" if shared else f"would both write the same file {f.name}"
                    raise InputError(f"Outputs {owner} and {p} {what}; give each output its own name.")
            claimed.append((f, p))
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        for src in _input_files(source):
            for f, owner in claimed:
                if _same_file(f, src):
                    what = str(owner) if f == owner else f"{f.name} (written with {owner.name})"
                    whose = str(source) if src == source else f"{src.name} (the voxel data of {source.name})"
                    raise InputError(f"The output {what} is the input {whose}; MedGAN never writes over its input. "
                                     f"Choose another output name.")
    return paths


def _image_and_sidecar(volume: Volume, path: Path) -> tuple[sitk.Image, str | None]:
    """The SimpleITK image to write and, for NIfTI with provenance, the text of its JSON sidecar."""
    image = from_volume(volume)
    provenance = volume.metadata.get("provenance")
    if volume.metadata.get("synthetic"):
        image.SetMetaData("ITK_FileNotes", SYNTHETIC_NOTE[:79])
    if provenance is None:
        return image, None
    if file_suffix(path) in (".nii", ".nii.gz"):  # no room in the header: a sidecar of the same name
        return image, json.dumps({"MedGAN": provenance, "synthetic": True, "note": SYNTHETIC_NOTE},
                                 default=_json_default, indent=2)
    image.SetMetaData(PROVENANCE_KEY, json.dumps(provenance, default=_json_default, sort_keys=True))
    return image, None


def _sources_of(volume: Volume) -> list[str]:
    """The files a MedGAN output was computed from (its input's ``source``, the provenance's ``input``)."""
    if not volume.metadata.get("synthetic"):
        return []
    provenance = volume.metadata.get("provenance")
    found = [volume.metadata.get("source"), provenance.get("input") if isinstance(provenance, dict) else None]
    return [str(s) for s in found if s]


def write_volumes(outputs: Mapping[str | os.PathLike, Volume], *, compress: bool = True,
                  sources: Iterable[str | os.PathLike | None] = ()) -> list[Path]:
    """Write several volumes all or nothing: each to a temporary name, renamed into place only when all succeeded.

    On any failure every file that existed before is still there, unchanged, and no new one is left. Paths are
    checked first (:func:`check_output_paths`) against each other, against ``sources`` (the input files) and, for
    MedGAN outputs, against the file each was computed from. Provenance goes into the header (or a NIfTI
    sidecar). Returns the paths written, in order.
    """
    volumes = list(outputs.values())
    implicit = [s for v in volumes for s in _sources_of(v)]
    paths = check_output_paths(list(outputs), inputs=[*sources, *implicit])
    with staged_write() as stage:
        for path, volume in zip(paths, volumes):
            image, sidecar = _image_and_sidecar(volume, path)
            staged = stage.path_for(path)
            sitk.WriteImage(image, str(staged), useCompression=compress)
            if sidecar is not None:
                stem = path.name[: -len(file_suffix(path))]
                staged.with_name(stem + ".json").write_text(sidecar)
    return paths


def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True,
                 source: str | os.PathLike | None = None) -> Path:
    """Write ``volume`` to ``path`` atomically; provenance goes into the header (or a NIfTI sidecar).

    Refused: a ``path`` that is ``source`` (the input file; also through links) or, for a MedGAN output, the
    file it was computed from. See :func:`write_volumes` to write several files all or nothing.
    """
    return write_volumes({path: volume}, compress=compress, sources=[source])[0]


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
