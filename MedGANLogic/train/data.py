"""Training data: volumes -> normalised 2D slices -> deterministic batches.

Sources (``data.source`` in the config):
  * ``phantom``: subjects of :mod:`MedGANLogic.simulate` (train / validation seeds of its ``SPLITS``);
    ``data.input`` / ``data.target`` name ``Subject.volumes`` keys ("T1w", "T2w", "CT", ...), and
    ``data.low_dose`` makes the input a simulated low-dose reconstruction of the CT.
  * ``folders``: your own volumes (NIfTI, NRRD, MHA/MHD files or DICOM series folders). Paired training
    (pix2pix, ldct) matches ``data.source_dir`` and ``data.target_dir`` by file name (``sub-01.nii.gz`` with
    ``sub-01.nii.gz`` or ``sub-01.nrrd``); unpaired training (cyclegan) takes any files of each folder.
    ``data.val_fraction`` holds the last volumes out for the sample grids.
  * ``synthetic``: random shapes and a known transform of them, for tests and smoke runs.

Every volume is normalised whole, with the model card's normalisation (:func:`normalize_for_training`, which is
:func:`MedGANLogic.normalization.normalize`), exactly as the inference engine will normalise it, then cut into
slices along ``data.slice_axis`` (with ``context_slices`` neighbours as channels for 2.5d cards).

Batches are a pure function of (seed, step, sub-step, rank): which slices (an epoch-wise permutation of a
stream of sample numbers, so each epoch sees every slice once and DDP ranks see different slices) and how they
are augmented (left-right flip, placement in the padded canvas). Nothing depends on the history of the run,
which is what makes ``--resume`` bit-exact and lets every rank draw its own batches without communication.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..normalization import intensity_window, normalize

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


# --- normalisation: the one place training normalises intensities ---------------------------------------------
def normalize_for_training(array: np.ndarray, spec: dict[str, Any],
                           stats: dict[str, float] | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """Normalise a whole volume exactly as inference will (card ``normalization`` spec); returns (array, window)."""
    return normalize(array, spec, stats)


def auto_window(volumes: list[np.ndarray], spec: dict[str, Any]) -> list[float]:
    """A ``fixed`` window for a population: the median foreground percentile window of ``volumes``."""
    pct = {"kind": "mr_percentile", "percentiles": spec.get("percentiles", [0.5, 99.5])}
    windows = np.array([[w["low"], w["high"]] for w in (intensity_window(v, pct) for v in volumes)])
    low, high = np.median(windows, axis=0)
    return [round(float(low), 2), round(float(high), 2)]


def range_low(spec: dict[str, Any]) -> float:
    """The background value of a normalised image (low end of the spec's range)."""
    return 0.0 if spec.get("kind") == "none" else float(spec.get("range", [-1.0, 1.0])[0])


# --- slices ---------------------------------------------------------------------------------------------------
def volume_slices(array: np.ndarray, axis: int, context: int = 0) -> np.ndarray:
    """(z, y, x) volume -> (S, 1 + 2*context, H, W) slices along ``axis``; edge slices repeat at the ends."""
    slices = np.moveaxis(array, axis, 0)
    if context:
        slices = np.pad(slices, ((context, context), (0, 0), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(slices, 2 * context + 1, axis=0)
    return np.ascontiguousarray(windows.transpose(0, 3, 1, 2), dtype=np.float32)


def foreground_fraction(slices: np.ndarray, background: float, width: float) -> np.ndarray:
    """Per slice, the fraction of pixels of the centre channel above the background (5 % of the range)."""
    centre = slices[:, slices.shape[1] // 2]
    return (centre > background + 0.05 * width).reshape(len(centre), -1).mean(axis=1)


@dataclass
class SliceSet:
    """Normalised slices of one domain: a list of (C, h, w) float32 arrays (sizes may differ between volumes)."""

    slices: list[np.ndarray]
    background: float = -1.0
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def channels(self) -> int:
        return int(self.slices[0].shape[0])

    @property
    def max_hw(self) -> tuple[int, int]:
        return (max(s.shape[1] for s in self.slices), max(s.shape[2] for s in self.slices))


def canvas_size(hw: tuple[int, int], multiple: int, crop: list[int] | None) -> tuple[int, int]:
    if crop:
        if crop[0] % multiple or crop[1] % multiple:
            raise InputError(f"data.crop {crop} must be a multiple of the generator's size multiple ({multiple}).")
        return int(crop[0]), int(crop[1])
    return tuple(-(-s // multiple) * multiple for s in hw)  # type: ignore[return-value]


def place(image: np.ndarray, out_hw: tuple[int, int], offset: tuple[int, int], background: float) -> np.ndarray:
    """Put ``image`` (C, h, w) into an (C, H, W) canvas of background at ``offset`` (dy, dx); negative offsets crop."""
    c, h, w = image.shape
    out = np.full((c, out_hw[0], out_hw[1]), background, dtype=np.float32)
    dy, dx = offset
    sy0, sx0 = max(0, -dy), max(0, -dx)
    ty0, tx0 = max(0, dy), max(0, dx)
    hh = min(h - sy0, out_hw[0] - ty0)
    ww = min(w - sx0, out_hw[1] - tx0)
    out[:, ty0:ty0 + hh, tx0:tx0 + ww] = image[:, sy0:sy0 + hh, sx0:sx0 + ww]
    return out


class _Stream:
    """Sample numbers -> slice indices: a fresh seeded permutation of all slices per epoch."""

    def __init__(self, n: int, seed: int, stream: int):
        if n == 0:
            raise InputError("No training slices: every slice was background. Check the data and "
                             "data.min_foreground.")
        self.n, self.seed, self.stream = n, seed, stream
        self._perms: dict[int, np.ndarray] = {}

    def index(self, sample: int) -> int:
        epoch, pos = divmod(sample, self.n)
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.n)
        return int(self._perms[epoch][pos])


class SliceBatches:
    """Deterministic batches of one or two domains.

    Args:
        domains: {"source": SliceSet, "target": SliceSet} (paired: same length, slices correspond) or
            {"A": SliceSet, "B": SliceSet} (unpaired).
        paired: whether the domains are drawn together (same index, same augmentation).
        batch_size: slices per batch and rank.
        size_multiple: canvas sides are multiples of it (the generator's down-sampling factor).
        crop: [h, w] random crops instead of whole padded slices.
        augment: {"flip": bool (left-right), "shift": int (extra random placement, pixels)}.
        substeps: batches drawn per training step (critic steps), so each gets its own sample numbers.
    """

    def __init__(self, domains: dict[str, SliceSet], *, paired: bool, batch_size: int, seed: int,
                 size_multiple: int = 1, crop: list[int] | None = None, augment: dict[str, Any] | None = None,
                 substeps: int = 1, val: dict[str, SliceSet] | None = None):
        self.domains, self.paired, self.batch_size, self.seed = domains, paired, batch_size, seed
        self.augment = dict(augment or {})
        self.substeps = substeps
        self.val = val or {}
        names = list(domains)
        if paired and len({len(domains[n]) for n in names}) != 1:
            raise InputError(f"Paired data need the same number of slices in {' and '.join(names)}.")
        hw = tuple(max(domains[n].max_hw[i] for n in names) for i in range(2))
        self.hw = canvas_size(hw, size_multiple, crop)  # type: ignore[arg-type]
        self.crop = bool(crop)
        self.streams = {n: _Stream(len(domains[n]), seed, 0 if paired else i) for i, n in enumerate(names)}

    def _offset(self, rng: np.random.Generator, hw: tuple[int, int]) -> tuple[int, int]:
        shift = int(self.augment.get("shift", 0))
        out = []
        for size, canvas in zip(hw, self.hw):
            lo, hi = min(0, canvas - size), max(0, canvas - size)  # crop window or padding slack
            centre = (lo + hi) // 2
            if self.crop or shift:
                lo2, hi2 = (lo, hi) if self.crop else (max(lo, centre - shift), min(hi, centre + shift))
                out.append(int(rng.integers(lo2, hi2 + 1)))
            else:
                out.append(centre)
        return out[0], out[1]

    def batch(self, step: int, sub: int = 0, rank: int = 0, world: int = 1) -> Batch:
        """The batch of training step ``step`` (sub-step ``sub``) for DDP rank ``rank`` of ``world``."""
        first = ((step * self.substeps + sub) * world + rank) * self.batch_size
        out: dict[str, list[np.ndarray]] = {n: [] for n in self.domains}
        for j in range(self.batch_size):
            sample = first + j
            groups = [list(self.domains)] if self.paired else [[n] for n in self.domains]
            for g, group in enumerate(groups):
                idx = self.streams[group[0]].index(sample)
                rng = np.random.default_rng([self.seed, 7, g, sample])
                flip = bool(self.augment.get("flip")) and bool(rng.integers(2))
                shape = self.domains[group[0]].slices[idx].shape[1:]
                offset = self._offset(rng, shape)
                for name in group:
                    dom = self.domains[name]
                    img = place(dom.slices[idx], self.hw, offset, dom.background)
                    out[name].append(img[:, :, ::-1] if flip else img)
        return {n: torch.from_numpy(np.ascontiguousarray(np.stack(v))) for n, v in out.items()}

    def sample_batch(self, n: int = 4) -> Batch:
        """A fixed batch for sample grids: the first slices of the validation set (else of training), centred."""
        source = self.val or self.domains
        out = {}
        for name, dom in source.items():
            picks = np.linspace(0, len(dom) - 1, num=min(n, len(dom))).round().astype(int)
            imgs = [place(dom.slices[i], self.hw, self._centre(dom.slices[i].shape[1:]), dom.background)
                    for i in picks]
            out[name] = torch.from_numpy(np.stack(imgs))
        return out

    def _centre(self, hw: tuple[int, int]) -> tuple[int, int]:
        return tuple((c - s) // 2 for s, c in zip(hw, self.hw))  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {"slices": {n: len(d) for n, d in self.domains.items()}, "canvas": list(self.hw),
                "val_slices": {n: len(d) for n, d in self.val.items()}}


# --- volumes from each source ---------------------------------------------------------------------------------
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
    from .. import simulate

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
        from .. import simulate

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


def _split_seeds(split: str, count: int | None) -> list[int]:
    from .. import simulate

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
    seeds = _split_seeds(split, counts.get(split))
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
    from ..io import read_volume

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


# --- assembling ---------------------------------------------------------------------------------------------------
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
        from ..simulate.datasets import randomized_volumes

        return tuple(VolumeSet(*randomized_volumes(data, split, paired, int(config["seed"])))  # type: ignore
                     for split in ("train", "val"))
    if source == "synthetic":
        val_data = dict(data, count=max(2, int(data.get("count", 8)) // 4), volumes=1)
        return synthetic_volumes(data, config["seed"], paired), synthetic_volumes(val_data, config["seed"] + 1, paired)
    raise InputError(f"Unknown data.source {source!r}; use phantom, randomized, folders or synthetic.")


def resolve_auto_windows(config: dict[str, Any], volumes: VolumeSet, domains: dict[str, tuple[str, str]]) -> None:
    """Replace ``"window": "auto"`` of ``fixed`` normalisations in the export cards by numbers (in place).

    ``domains`` maps an export entry's generator name to the (input, output) roles of the volumes.
    """
    for entry in config["export"]:
        roles = domains.get(entry.get("generator", ""), ("source", "target"))
        for side, role in zip(("input", "output"), roles):
            spec = entry["card"][side].get("normalization", {})
            if spec.get("kind") == "fixed" and spec.get("window") == "auto":
                spec["window"] = auto_window(volumes.volumes[role], spec)
                log.info("auto window of %s %s: %s", entry["card"]["id"], side, spec["window"])


def to_slices(volumes: list[np.ndarray], spec: dict[str, Any], axis: int, context: int,
              stats_from: list[dict[str, float]] | None = None) -> tuple[list[np.ndarray], list[dict[str, float]]]:
    """Normalise each volume whole, then slice it: returns (per-volume (S, C, H, W) arrays, per-volume windows)."""
    out, windows = [], []
    for i, vol in enumerate(volumes):
        norm, stats = normalize_for_training(vol, spec, stats_from[i] if stats_from else None)
        out.append(volume_slices(norm, axis, context))
        windows.append(stats)
    return out, windows


def build_slice_sets(vset: VolumeSet, specs: dict[str, dict[str, Any]], data: dict[str, Any], paired: bool,
                     contexts: dict[str, int]) -> dict[str, SliceSet]:
    """Normalised slice sets per role; paired slices are kept where the source has enough foreground."""
    axis = int(data.get("slice_axis", 0))
    min_fg = float(data.get("min_foreground", 0.1))
    sets: dict[str, SliceSet] = {}
    per_vol: dict[str, list[np.ndarray]] = {}
    windows: dict[str, list[dict[str, float]]] = {}
    for role in ("source", "target"):
        spec = specs[role]
        stats_from = None
        if spec.get("kind") == "same_as_input":
            spec, stats_from = specs["source"], windows["source"]
        per_vol[role], windows[role] = to_slices(vset.volumes[role], spec, axis, contexts.get(role, 0), stats_from)
        specs = dict(specs, **{role: spec})
    for role in ("source", "target"):
        spec = specs[role]
        bg = range_low(spec)
        width = float(np.subtract(*spec.get("range", [-1.0, 1.0])[::-1])) if spec.get("kind") != "none" else 2.0
        kept: list[np.ndarray] = []
        names: list[str] = []
        for v, (arr, name) in enumerate(zip(per_vol[role], vset.names[role])):
            ref = per_vol["source"][v] if paired else arr
            ref_spec = specs["source"] if paired else spec
            keep = foreground_fraction(ref, range_low(ref_spec), width) >= min_fg
            kept.extend(arr[keep])
            names.extend(f"{name}:{i}" for i in np.flatnonzero(keep))
        sets[role] = SliceSet(kept, background=bg, names=names)
    return sets


def build_batches(config: dict[str, Any], *, paired: bool, size_multiple: int,
                  domains: dict[str, tuple[str, str]], roles: tuple[str, str] = ("source", "target"),
                  volumes: tuple[VolumeSet, VolumeSet | None] | None = None) -> SliceBatches:
    """Everything from the config to a :class:`SliceBatches`; resolves ``auto`` windows into ``config`` first.

    ``roles`` renames the two domains in the batches (("A", "B") for CycleGAN).
    """
    if not config["export"]:
        raise InputError("The config has no export card: the card's input/output normalisation defines how the "
                         "training data are normalised. Add an export entry (see the bundled recipes).")
    train_v, val_v = volumes or load_volumes(config, paired)
    resolve_auto_windows(config, train_v, domains)
    card = config["export"][0]["card"]
    specs = {"source": copy.deepcopy(card["input"]["normalization"]),
             "target": copy.deepcopy(card["output"]["normalization"])}
    ctx = int(card.get("context_slices", 0)) if card.get("dims") == "2.5d" else 0
    contexts = {"source": ctx, "target": 0}
    data = config["data"]
    train_sets = build_slice_sets(train_v, specs, data, paired, contexts)
    val_sets = build_slice_sets(val_v, specs, data, paired, contexts) if val_v and val_v.volumes["source"] else {}
    rename = dict(zip(("source", "target"), roles))
    return SliceBatches({rename[k]: v for k, v in train_sets.items()}, paired=paired,
                        batch_size=int(config["batch_size"]), seed=int(config["seed"]),
                        size_multiple=size_multiple, crop=data.get("crop"), augment=data.get("augment"),
                        substeps=int(config["loss"]["critic_steps"]),
                        val={rename[k]: v for k, v in val_sets.items() if len(v)})
