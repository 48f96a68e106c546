"""Real images that ship inside public packages, fetched once into ``.cache/real/`` (``make eval-real``).

Nobody on this project made these images; they are the measure of how the phantom-trained models fare on real
scans. They are fetched from the package registries with their ordinary clients (``pip download``,
``apt-get download``), the wanted files are taken out of the archives, checked against the SHA-256 sums below
and written to the cache folder; after that everything runs offline. Every load checks the SHA-256 again, so a
changed file is refused. The images are never committed.

    python -m MedGANLogic.evaluation.real_data fetch [--cache .cache/real]
    python -m MedGANLogic.evaluation.real_data list

Sources (see :data:`PACKAGES`):

* pyradiomics 3.0.1 source archive (PyPI), ``data/``: chest CT ``lung1``/``lung2`` (HU, 0.57-0.63 mm x 5 mm, with
  tumour labels), contrast-enhanced T1-weighted brain MRI ``brain1``/``brain2`` (0.78 mm x 6.5 mm, with tumour
  labels), and a breast MRI ``breast1`` (no MedGAN task applies to it).
* Debian ``python3-imageio``: ``stent.npz``, a CT of a stented abdominal aorta, 256 x 128 x 128. The file holds
  a bare array: no spacing, no orientation, values clipped to 0-2000 and stored in 62.5-unit steps. We read the
  values as HU and assume 1 mm isotropic voxels with the identity direction (the aortic stent is ~20 voxels
  across and a lumbar vertebral body ~45, which fits ~1 mm); everything below 0 HU (fat, lung, air) is lost.
* dipy 1.12.1 wheel (PyPI), ``dipy/data/files/``: ``t1_coronal_slice.npy``, one skull-stripped coronal T1-weighted
  slice (256 x 256, scaled to 0-1, no geometry: 1 mm pixels assumed, stored as a one-slice volume with the
  identity direction, so the engine sees it as a single axial slice), and ``aniso_vox.nii.gz``, a T2-weighted
  (b = 0 diffusion EPI: CSF bright) brain without lesions, 58 x 58 x 24 at 4 x 4 x 5 mm (geometry from the
  NIfTI header).
* pydicom 3.0.2 wheel (PyPI), ``pydicom/data/test_files/CT_small.dcm``: one real CT slice through a vertebra and
  the muscles behind it (128 x 128 at 0.66 mm per its header, HU; cut down from NEMA's sample CT1_UNC).
  Validation only (:data:`VALIDATION_IMAGES`): recipes choose between candidate models on it (:mod:`.validation`);
  no report scores it, so a choice made on it is still tested on the report's images.
* nibabel 5.4.2 wheel (PyPI), ``nibabel/tests/data/``: ``example4d.nii.gz``, an EPI brain time series (128 x 96 x 24
  at 2 x 2 x 2.2 mm; volumes 0 and 1 are used) and ``anatomical.nii``, a small T1-weighted brain (33 x 41 x 25 at
  2 mm). Validation only, as ``CT_small.dcm``: super-resolution and MR denoising recipes choose on them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume

CACHE_ENV = "MEDGAN_REAL_DATA"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "real"
MAKE_TARGET = "make eval-real"


class RealDataMissingError(InputError):
    """A real image is not in the cache (run ``make eval-real``), or its bytes changed since it was fetched."""


@dataclass(frozen=True)
class Package:
    """A registry package that carries real images, and how to fetch it."""

    name: str  # as shown in the report, e.g. "pyradiomics 3.0.1 (PyPI source archive)"
    kind: str  # "pypi-sdist", "pypi-wheel" or "debian"
    spec: str  # what the client is asked for, e.g. "pyradiomics==3.0.1"
    licence: str


PACKAGES: dict[str, Package] = {
    "pyradiomics": Package("pyradiomics 3.0.1 (PyPI source archive, data/)", "pypi-sdist", "pyradiomics==3.0.1",
                           "BSD-3-Clause (pyradiomics); test data of the pyradiomics project"),
    "imageio": Package("Debian python3-imageio (imageio/resources/images/)", "debian", "python3-imageio",
                       "BSD-2-Clause (imageio); its standard test images"),
    "dipy": Package("dipy 1.12.1 (PyPI wheel, dipy/data/files/)", "pypi-wheel", "dipy==1.12.1",
                    "BSD-3-Clause (dipy); its test data"),
    "pydicom": Package("pydicom 3.0.2 (PyPI wheel, pydicom/data/test_files/)", "pypi-wheel", "pydicom==3.0.2",
                       "MIT (pydicom); its test data (CT_small.dcm: cut down from NEMA's public DICOM sample CT1_UNC; "
                       "the folder's README knows no restriction on their use)"),
    "nibabel": Package("nibabel 5.4.2 (PyPI wheel, nibabel/tests/data/)", "pypi-wheel", "nibabel==5.4.2",
                       "MIT (nibabel); its test data"),
}


@dataclass(frozen=True)
class RealFile:
    """One file inside a package: where it sits in the archive and the SHA-256 of its bytes."""

    package: str
    member: str  # path inside the archive; a leading "*/" matches the archive's top folder
    sha256: str


_PYRAD = "*/data/"
FILES: dict[str, RealFile] = {
    **{f"{case}_{part}.nrrd": RealFile("pyradiomics", f"{_PYRAD}{case}_{part}.nrrd", sha)
       for (case, part), sha in {
           ("lung1", "image"): "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
           ("lung1", "label"): "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
           ("lung2", "image"): "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
           ("lung2", "label"): "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
           ("brain1", "image"): "fffdb111ee8b428ede7256707393c927a7d5be912f0604cf3c6f1bd5fc9644cf",
           ("brain1", "label"): "ae6d8e6b84f7e99d68c210ee2fa6aaaefa0b2df0a84f55efca4feebe2b216059",
           ("brain2", "image"): "d35a1c6a3e1eb72bae97c5515472fbe057fb38ee8e1e199215d1c3c6f292332e",
           ("brain2", "label"): "15189c024936ecc337649b9a10c475117c7c40df0d53c22163f9a2023ed741a5",
           ("breast1", "image"): "0e8b668f3ce9b9aacff20dc3c216866f43069ff96b269fb45b76f5e205a431e2",
           ("breast1", "label"): "07085bb0e36a956de5bd1c1c1b5f8bdf2ce80952125b13cbd352412c108c8950",
       }.items()},
    "stent.npz": RealFile("imageio", "usr/lib/python3/dist-packages/imageio/resources/images/stent.npz",
                          "60a83d2296b51ee6a53153e9ba96ba9020391b0c8952895d9d60a0a629ac6bb6"),
    "t1_coronal_slice.npy": RealFile("dipy", "dipy/data/files/t1_coronal_slice.npy",
                                     "6ae15c125c97e11e1ba478ff252c1774d2c31db242a8a61daa93e7b43c873c7b"),
    "aniso_vox.nii.gz": RealFile("dipy", "dipy/data/files/aniso_vox.nii.gz",
                                 "8440b6366d3dbd58d8f5af3ef6764dbd65e35b1061abe7bf4dc8fac32fb7aff7"),
    "CT_small.dcm": RealFile("pydicom", "pydicom/data/test_files/CT_small.dcm",
                             "3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6"),
    "example4d.nii.gz": RealFile("nibabel", "nibabel/tests/data/example4d.nii.gz",
                                 "42097dfbab9d2a036b41ae5c97a359591cf2cf5c3f8dc6ca6455c0b8a7f22696"),
    "anatomical.nii": RealFile("nibabel", "nibabel/tests/data/anatomical.nii",
                               "1c089f37b6597a38bb4157a1e1b3f7f13f1bc9d4e7a8cfdfaf91d85cd8f66594"),
}


@dataclass(frozen=True)
class RealImage:
    """A real image as the evaluation uses it: its file, its label file if any, what it shows."""

    file: str
    modality: str  # "CT" or "MR"
    description: str
    contrast: str | None = None
    label: str | None = None  # tumour label file (1 = tumour)
    assumed: str = ""  # what the file does not say and we assume
    metadata: dict[str, Any] = field(default_factory=dict)
    frame: int | None = None  # the 3D volume of a 4D file


IMAGES: dict[str, RealImage] = {
    "lung1": RealImage("lung1_image.nrrd", "CT", "chest CT with a lung tumour", label="lung1_label.nrrd"),
    "lung2": RealImage("lung2_image.nrrd", "CT", "chest CT with a lung tumour", label="lung2_label.nrrd"),
    "brain1": RealImage("brain1_image.nrrd", "MR", "contrast-enhanced T1w brain MRI with a tumour", "T1w",
                        label="brain1_label.nrrd", metadata={"contrast_agent": True}),
    "brain2": RealImage("brain2_image.nrrd", "MR", "contrast-enhanced T1w brain MRI with a tumour", "T1w",
                        label="brain2_label.nrrd", metadata={"contrast_agent": True}),
    "breast1": RealImage("breast1_image.nrrd", "MR", "breast MRI with a lesion", label="breast1_label.nrrd"),
    "stent": RealImage("stent.npz", "CT", "CT of a stented abdominal aorta (values clipped to 0-2000 HU, "
                       "62.5 HU steps)", assumed="1 mm isotropic voxels, identity direction, values in HU"),
    "t1_coronal": RealImage("t1_coronal_slice.npy", "MR", "one skull-stripped coronal T1w brain slice", "T1w",
                            assumed="1 mm pixels; a coronal section stored as one axial slice (identity direction)"),
    "t2_brain": RealImage("aniso_vox.nii.gz", "MR", "T2-weighted (b = 0 EPI) brain without lesions, 4 x 4 x 5 mm",
                          "T2w"),
}

# Real images kept out of the reports: the validation on which recipes choose between candidates (:mod:`.validation`)
VALIDATION_IMAGES: dict[str, RealImage] = {
    "ct_small": RealImage("CT_small.dcm", "CT", "one real CT slice (vertebra, back muscles), 128 x 128 at 0.66 mm "
                          "(validation only)"),
    **{f"epi{frame}": RealImage("example4d.nii.gz", "MR", f"an EPI brain (T2*-weighted, 2 x 2 x 2.2 mm), volume "
                                f"{frame} of a time series (validation only)", frame=frame) for frame in (0, 1)},
    "t1_small": RealImage("anatomical.nii", "MR", "a T1w brain, 2 mm, 33 x 41 x 25 voxels (validation only)", "T1w"),
}


# --- the cache ----------------------------------------------------------------------------------------------------
def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``path``, else ``$MEDGAN_REAL_DATA``, else ``.cache/real`` in the checkout."""
    return Path(path or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The cached file ``name`` (a key of :data:`FILES`) after checking its SHA-256.

    Raises:
        RealDataMissingError: the file is missing (says to run ``make eval-real``) or its bytes changed.
    """
    spec = FILES[name]
    path = cache_dir(cache) / name
    if not path.is_file():
        raise RealDataMissingError(
            f"Real image {name} is not in {path.parent}: run `{MAKE_TARGET}` once (it fetches the real images from "
            f"the package registries into that folder), or point ${CACHE_ENV} at a folder that has them.")
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise RealDataMissingError(
            f"{path} has changed since it was fetched (SHA-256 {actual[:12]}..., expected {spec.sha256[:12]}...); "
            f"delete it and run `{MAKE_TARGET}` to fetch it again.")
    return path


def missing_files(cache: str | os.PathLike | None = None) -> list[str]:
    """Names of :data:`FILES` that are absent from the cache or fail their SHA-256 check."""
    out = []
    for name in FILES:
        try:
            verified_path(name, cache)
        except RealDataMissingError:
            out.append(name)
    return out


# --- fetching -------------------------------------------------------------------------------------------------------
Runner = Callable[..., Any]


def _run(cmd: list[str], **kwargs: Any) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): " + " | ".join(tail))


def _download(package: Package, into: Path, run: Runner = _run) -> Path:
    """Fetch ``package`` into the folder ``into`` with the registry's own client; returns the archive's path."""
    pip = [sys.executable, "-m", "pip"]
    if package.kind == "pypi-sdist":
        # the source archive's setup imports versioneer while pip reads its metadata: give it one, outside the venv
        tools = into / "build-tools"
        run(pip + ["install", "--quiet", "--target", str(tools), "versioneer==0.29"])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tools), os.environ.get("PYTHONPATH")])))
        run(pip + ["download", "--quiet", "--no-deps", "--no-build-isolation", "--no-binary", ":all:", "-d",
                   str(into), package.spec], env=env)
        pattern = "*.tar.gz"
    elif package.kind == "pypi-wheel":
        run(pip + ["download", "--quiet", "--no-deps", "--only-binary", ":all:", "-d", str(into), package.spec])
        pattern = "*.whl"
    elif package.kind == "debian":
        try:
            run(["apt-get", "download", package.spec], cwd=into)
        except RuntimeError:  # a fresh machine has no package lists yet
            run(["apt-get", "update"])
            run(["apt-get", "download", package.spec], cwd=into)
        deb = next(into.glob("*.deb"))
        run(["dpkg-deb", "-x", str(deb), str(into / "deb")])
        return into / "deb"
    else:
        raise ValueError(f"unknown package kind {package.kind!r}")
    found = sorted(into.glob(pattern))
    if not found:
        raise RuntimeError(f"{package.spec}: the download left no {pattern} in {into}")
    return found[0]


def _member_bytes(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` in a .tar.gz, a wheel/zip or an unpacked folder (``*/`` = any top folder)."""
    def matches(name: str) -> bool:
        if member.startswith("*/"):
            return "/" in name and name.split("/", 1)[1] == member[2:]
        return name == member

    if archive.is_dir():
        hits = [p for p in archive.rglob("*") if p.is_file() and matches(p.relative_to(archive).as_posix())]
        if hits:
            return hits[0].read_bytes()
    elif archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tar:
            for info in tar.getmembers():
                if info.isfile() and matches(info.name):
                    return tar.extractfile(info).read()  # type: ignore[union-attr]
    else:
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if matches(name):
                    return zf.read(name)
    raise RuntimeError(f"{member} is not in {archive.name}")


def extract(archive: Path, names: list[str], cache: Path) -> list[Path]:
    """Copy the files ``names`` out of ``archive`` into ``cache`` after checking their SHA-256 (atomic writes).

    Raises:
        RuntimeError: a file is missing from the archive or its SHA-256 differs (nothing is written for it).
    """
    cache.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        data = _member_bytes(archive, FILES[name].member)
        actual = hashlib.sha256(data).hexdigest()
        if actual != FILES[name].sha256:
            raise RuntimeError(f"{name} in {archive.name} has SHA-256 {actual}, not the expected "
                               f"{FILES[name].sha256}: the package changed; check the new file before using it.")
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, cache / name)
        written.append(cache / name)
    return written


def fetch(cache: str | os.PathLike | None = None, *, log: Callable[[str], None] = print,
          run: Runner = _run) -> Path:
    """Fetch every missing or changed file of :data:`FILES` into the cache; a complete cache is left alone.

    Returns the cache folder. Raises RuntimeError naming each package that could not be fetched (the others are
    still fetched).
    """
    folder = cache_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, list[str]] = {}
    for name in missing_files(folder):
        wanted.setdefault(FILES[name].package, []).append(name)
    if not wanted:
        log(f"real images: all {len(FILES)} files present in {folder} (SHA-256 checked)")
        return folder
    failures = []
    for key, names in wanted.items():
        package = PACKAGES[key]
        log(f"real images: fetching {package.name} for {', '.join(names)}")
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
            try:
                extract(_download(package, Path(tmp), run), names, folder)
            except (RuntimeError, OSError, StopIteration) as exc:
                failures.append(f"{package.name}: {exc}")
    if failures:
        raise RuntimeError("Could not fetch some real images:\n  " + "\n  ".join(failures))
    log(f"real images: {len(FILES)} files in {folder}")
    return folder


# --- loading ----------------------------------------------------------------------------------------------------
def load(name: str, cache: str | os.PathLike | None = None) -> Volume:
    """The real image ``name`` (a key of :data:`IMAGES` or :data:`VALIDATION_IMAGES`) as a :class:`Volume` with its
    file's geometry.

    CT is in HU; MR keeps the file's arbitrary units. ``metadata`` carries modality, contrast (where known),
    ``name``, ``description``, ``source`` (the package) and ``assumed`` (what the file does not say).
    """
    known = {**IMAGES, **VALIDATION_IMAGES}
    if name not in known:
        raise KeyError(f"unknown real image {name!r}; known: {', '.join(known)}")
    spec = known[name]
    path = verified_path(spec.file, cache)
    meta: dict[str, Any] = {"modality": spec.modality, "name": name, "description": spec.description,
                            "source": PACKAGES[FILES[spec.file].package].name, **spec.metadata}
    if spec.contrast:
        meta["contrast"] = spec.contrast
    if spec.modality == "CT":
        meta["units"] = "HU"
    if spec.assumed:
        meta["assumed"] = spec.assumed
    if path.suffix == ".npz":
        with np.load(path) as npz:
            array = npz[npz.files[0]]
        return Volume(array.astype(np.float32), spacing=(1.0, 1.0, 1.0), metadata=meta)
    if path.suffix == ".npy":
        array = np.load(path)
        return Volume(array.astype(np.float32)[None], spacing=(1.0, 1.0, 1.0), metadata=meta)
    from ..io import read_volume

    volume = read_volume(path, metadata=meta, frame=spec.frame)
    volume.metadata["source"] = meta["source"]  # the package, not this machine's cache path
    return volume


def load_label(name: str, cache: str | os.PathLike | None = None) -> Volume:
    """The tumour label of the real image ``name`` as a uint8 Volume (1 = tumour) on the image's exact grid."""
    spec = IMAGES[name]
    if spec.label is None:
        raise KeyError(f"real image {name!r} has no label")
    from ..io import read_volume

    label = read_volume(verified_path(spec.label, cache))
    meta = {"kind": "labels", "name": f"{name} label", "source": PACKAGES[FILES[spec.label].package].name}
    return label.with_array((label.array > 0).astype(np.uint8), metadata=meta)


def inventory() -> list[dict[str, str]]:
    """One row per real image: name, package, what it shows, what is assumed (for the report)."""
    return [{"image": n, "package": PACKAGES[FILES[s.file].package].name, "file": s.file, "shows": s.description,
             "label": s.label or "", "assumed": s.assumed or "geometry from the file header"}
            for n, s in IMAGES.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.evaluation.real_data",
                                     description="Fetch or list the real images of `make eval-real`.")
    parser.add_argument("command", choices=("fetch", "list"))
    parser.add_argument("--cache", default=None, help=f"cache folder (default ${CACHE_ENV} or .cache/real)")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        try:
            fetch(args.cache)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    missing = set(missing_files(args.cache))
    for name, spec in {**IMAGES, **VALIDATION_IMAGES}.items():
        state = "missing" if {spec.file, spec.label} & missing else "ok"
        print(f"{name:12s} {state:8s} {spec.description}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
