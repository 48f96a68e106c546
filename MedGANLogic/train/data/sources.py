"""Raw training volumes (z, y, x) from each data source: the phantom (cached), folders of files, synthetic shapes."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError


@dataclass
class VolumeSet:
    """Raw volumes (z, y, x) in their own units, per domain, with a name per volume."""

    volumes: dict[str, list[np.ndarray]]
    names: dict[str, list[str]]


def cache_dir() -> Path:
    return Path(os.environ.get("MEDGAN_CACHE_DIR", Path.home() / ".cache" / "medgan"))


def cached_arrays(key: dict[str, Any], make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``make()`` once per ``key``: the arrays are kept as an .npz in :func:`cache_dir` (MEDGAN_CACHE_DIR)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = cache_dir() / "phantom" / f"{digest}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return arrays


def simulator_fingerprint() -> str:
    """A hash of the phantom simulator's source, so cached phantom data is rebuilt whenever the simulator changes."""
    from ... import simulate

    files = [Path(simulate.__file__)] if getattr(simulate, "__file__", None) else []
    if files and files[0].name == "__init__.py":
        files = sorted(files[0].parent.rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def phantom_subject_arrays(seed: int, keys: list[str], spacing_mm: float, healthy: bool = False,
                           low_dose: dict[str, Any] | None = None, snr: float | None = None) -> dict[str, np.ndarray]:
    """Arrays (z, y, x) of one phantom subject (cached): ``keys`` of ``Subject.volumes``, its ``head_mask``, and
    with ``low_dose`` ({"dose_fraction", "realisations"}) the pairs ``CT_low_dose_r`` / ``CT_full_dose_r``.

    The pairs are :func:`MedGANLogic.simulate.low_dose_volume` reconstructions of the subject's CT (projection
    -domain Poisson noise, filtered back-projection at the grid's pixel size), realisation ``r`` with noise seed
    ``16 * seed + r``; the full-dose image went through the same reconstruction, so a pair differs only by dose.
    ``snr`` overrides the MR signal-to-noise ratio (a huge value gives the noise-free contrasts of the same
    subject: anatomy, bias field and gain do not depend on it).
    """
    key = {"seed": seed, "keys": sorted(keys), "spacing_mm": spacing_mm, "healthy": healthy,
           "low_dose": low_dose, "snr": snr, "simulator": simulator_fingerprint(), "v": 2}

    def make() -> dict[str, np.ndarray]:
        from ... import simulate

        contrasts = tuple(k for k in simulate.ALL_CONTRASTS if k in keys or (k == "CT" and low_dose))
        options: dict[str, Any] = {"spacing_mm": spacing_mm, "contrasts": contrasts}
        if snr is not None:
            options["snr"] = float(snr)
        subject = simulate.make_subject(seed, **options)
        if healthy:
            subject = subject.healthy
        vols = subject.volumes
        out = {k: np.asarray(vols[k].array, dtype=np.float32) for k in keys if k in vols}
        missing = [k for k in keys if k not in vols]
        if missing:
            raise InputError(f"The phantom has no volume {missing[0]!r}; it has {', '.join(vols)}.")
        out["head_mask"] = np.asarray(subject.head_mask, dtype=np.uint8)
        if low_dose:
            for r in range(int(low_dose.get("realisations", 1))):
                with warnings.catch_warnings():  # skimage radon's "zero outside the circle": padded with air
                    warnings.simplefilter("ignore", UserWarning)
                    low, full = simulate.low_dose_volume(vols["CT"], float(low_dose["dose_fraction"]),
                                                         seed=16 * seed + r)
                out[f"CT_low_dose_{r}"] = np.asarray(low.array, dtype=np.float32)
                out[f"CT_full_dose_{r}"] = np.asarray(full.array, dtype=np.float32)
        return out

    return cached_arrays(key, make)


def split_seeds(split: str, count: int | None = None) -> list[int]:
    """Seeds of the phantom subjects of ``split`` (train, val or test), the first ``count`` of them."""
    from ... import simulate

    splits = simulate.SPLITS
    name = {"val": "validation" if "validation" in splits else "val"}.get(split, split)
    if name not in splits:
        raise InputError(f"The phantom has no split {split!r}; it has {', '.join(splits)}.")
    seeds = [int(s) for s in splits[name]]
    return seeds[:count] if count else seeds


DOSE_KEYS = ("CT_low_dose", "CT_full_dose")  # one volume per noise realisation


def phantom_volumes(data: dict[str, Any], split: str, paired: bool) -> VolumeSet:
    """Volumes of the phantom ``split``. Unpaired: the first half of the subjects give domain A, the rest B.

    ``data.input``/``data.target`` are ``Subject.volumes`` keys, or ``CT_low_dose``/``CT_full_dose`` (with
    ``data.low_dose``), which give one volume per noise realisation.
    """
    counts = data.get("subjects", {}) or {}
    seeds = split_seeds(split, counts.get(split))
    spacing = float(data.get("spacing_mm", 2.0))
    low_dose = data.get("low_dose")
    src_key, tgt_key = data["input"], data["target"]
    if (src_key in DOSE_KEYS or tgt_key in DOSE_KEYS) and not low_dose:
        raise InputError("data.input/target CT_low_dose or CT_full_dose need data.low_dose: {dose_fraction: 0.25, "
                         "realisations: 2}.")
    keys = sorted({k for k in (src_key, tgt_key) if k not in DOSE_KEYS})
    if not paired and len(seeds) < 2:
        raise InputError(f"Unpaired training needs at least 2 subjects in split {split!r}.")
    n_rep = int((low_dose or {}).get("realisations", 1)) if low_dose else 1
    vols: dict[str, list[np.ndarray]] = {"source": [], "target": []}
    names: dict[str, list[str]] = {"source": [], "target": []}
    half = len(seeds) // 2
    for i, seed in enumerate(seeds):
        arrays = phantom_subject_arrays(seed, keys, spacing, bool(data.get("healthy", False)), low_dose)
        roles = ["source", "target"] if paired else (["source"] if i < half else ["target"])
        for role in roles:
            key = src_key if role == "source" else tgt_key
            for r in range(n_rep):
                name = f"{key}_{r}" if key in DOSE_KEYS else key
                vols[role].append(arrays[name])
                names[role].append(f"{seed}/{name}")
    return VolumeSet(vols, names)


_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _case_key(path: Path) -> str:
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name  # a DICOM series folder


def list_cases(folder: str | Path) -> dict[str, Path]:
    """Image files (NIfTI, NRRD, MHA/MHD) and DICOM series sub-folders of ``folder``, keyed by name without suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Training data folder {folder} does not exist.")
    cases: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if (p.is_file() and any(p.name.lower().endswith(s) for s in _IMAGE_SUFFIXES)) or p.is_dir():
            key = _case_key(p)
            if key in cases:
                raise InputError(f"Two files in {folder} are both named {key!r} ({cases[key].name}, {p.name}); "
                                 f"keep one.")
            cases[key] = p
    if not cases:
        raise InputError(f"No volumes in {folder}: expected .nii/.nii.gz/.nrrd/.mha/.mhd files or DICOM series "
                         f"folders.")
    return cases


def folder_volumes(data: dict[str, Any], paired: bool) -> tuple[VolumeSet, VolumeSet]:
    """(train, val) volumes from ``data.source_dir`` / ``data.target_dir``."""
    from ...io import read_volume

    for key in ("source_dir", "target_dir"):
        if not data.get(key):
            raise InputError(f"data.source is 'folders' but data.{key} is not set (--{key.replace('_', '-')}).")
    src, tgt = list_cases(data["source_dir"]), list_cases(data["target_dir"])
    if paired:
        missing = sorted(set(src) ^ set(tgt))
        if missing:
            raise InputError(f"Paired training matches files by name, but {len(missing)} have no partner, e.g. "
                             f"{', '.join(missing[:5])}. Rename them, remove them, or train unpaired (cyclegan).")
        pairs = [(k, k) for k in sorted(src)]
    else:
        pairs = []
    val_fraction = float(data.get("val_fraction", 0.1))

    def load(path: Path):
        return read_volume(path).array

    def split(keys: list[str]) -> tuple[list[str], list[str]]:
        n_val = int(round(len(keys) * val_fraction)) if len(keys) > 2 else 0
        return keys[: len(keys) - n_val], keys[len(keys) - n_val:]

    train = VolumeSet({"source": [], "target": []}, {"source": [], "target": []})
    val = VolumeSet({"source": [], "target": []}, {"source": [], "target": []})
    if paired:
        tr, va = split([k for k, _ in pairs])
        for keys, dest in ((tr, train), (va, val)):
            for k in keys:
                a, b = load(src[k]), load(tgt[k])
                if a.shape != b.shape:
                    raise InputError(f"Paired volumes {src[k].name} {a.shape} and {tgt[k].name} {b.shape} differ in "
                                     f"shape; resample them onto one grid first.")
                dest.volumes["source"].append(a)
                dest.volumes["target"].append(b)
                dest.names["source"].append(k)
                dest.names["target"].append(k)
    else:
        for role, cases in (("source", src), ("target", tgt)):
            tr, va = split(sorted(cases))
            for keys, dest in ((tr, train), (va, val)):
                for k in keys:
                    dest.volumes[role].append(load(cases[k]))
                    dest.names[role].append(k)
    return train, val


def synthetic_volumes(data: dict[str, Any], seed: int, paired: bool) -> VolumeSet:
    """Smooth random blobs in [-1, 1] (source) and a fixed nonlinear contrast change of them (target).

    ``data.size`` [h, w] and ``data.count`` slices per volume, ``data.volumes`` volumes. Unpaired targets are
    made from other blobs, so only the contrast relation, not the anatomy, links the two domains.
    """
    from scipy.ndimage import gaussian_filter

    h, w = data.get("size", [32, 32])
    count, n_vol = int(data.get("count", 8)), int(data.get("volumes", 2))

    def blobs(rng: np.random.Generator) -> np.ndarray:
        field_ = gaussian_filter(rng.normal(size=(count, h, w)), sigma=(0, 3, 3))
        field_ /= np.abs(field_).max() + 1e-6
        return np.clip(field_, -1, 1).astype(np.float32)

    def contrast(x: np.ndarray) -> np.ndarray:
        return (0.8 - 1.6 * x ** 2).astype(np.float32)

    vols: dict[str, list[np.ndarray]] = {"source": [], "target": []}
    for i in range(n_vol):
        a = blobs(np.random.default_rng([seed, 11, i]))
        b = contrast(a) if paired else contrast(blobs(np.random.default_rng([seed, 12, i])))
        vols["source"].append(a)
        vols["target"].append(b)
    return VolumeSet(vols, {k: [f"synthetic-{i}" for i in range(n_vol)] for k in vols})


def load_volumes(config: dict[str, Any], paired: bool) -> tuple[VolumeSet, VolumeSet | None]:
    data = config["data"]
    source = data["source"]
    if source == "phantom":
        for key in ("input", "target"):
            if not data.get(key):
                raise InputError(f"data.source is 'phantom' but data.{key} (a Subject.volumes key such as T1w, "
                                 f"T2w, CT, or CT_low_dose / CT_full_dose) is not set.")
        val = phantom_volumes(data, "val", paired) if (data.get("subjects") or {}).get("val", 1) else None
        return phantom_volumes(data, "train", paired), val
    if source == "folders":
        return folder_volumes(data, paired)
    if source == "randomized":  # domain-randomised samples (issue 15): MedGANLogic.simulate.randomize
        from ...simulate.datasets import randomized_volumes

        return tuple(VolumeSet(*randomized_volumes(data, split, paired, int(config["seed"])))  # type: ignore
                     for split in ("train", "val"))
    if source == "synthetic":
        val_data = dict(data, count=max(2, int(data.get("count", 8)) // 4), volumes=1)
        return synthetic_volumes(data, config["seed"], paired), synthetic_volumes(val_data, config["seed"] + 1, paired)
    raise InputError(f"Unknown data.source {source!r}; use phantom, randomized, folders or synthetic.")

