"""What every report section shares: the test subjects (:class:`EvalContext`), how a section reports
(:class:`SectionResult`, :class:`Target`), and how it runs a shipped model (through :func:`MedGANLogic.run`, as a
user would, in fp32).

Everything is deterministic: the test subjects are the fixed seeds of ``MedGANLogic.simulate.SPLITS["test"]``,
low-dose noise has fixed seeds, and models run in fp32 (``precision="fp32"``), so the numbers do not depend on
whether the CPU has bf16; ``Testing/Python/test_precision.py`` bounds how far bf16 (the default where a card
allows it and the CPU has it) moves each model's output.

A synthesised MR contrast is compared with the subject's noise-free contrast (the same subject made with an
infinite SNR: anatomy, bias field and gain are identical), since no method can predict the target's own noise;
low-dose CT is compared with the full-dose reconstruction of the same slice (same projection geometry and
filtered back-projection).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..orientation import TRAINING_DIRECTION
from ..volume import Volume

if TYPE_CHECKING:
    from ..pipeline import RunResult

SPACING_MM = 2.0
#: The direction the phantom's arrays are stored in (and the models were trained in): volumes made from them here
#: carry it, so the engine's model frame does not turn them (an identity direction would flip x and y).
PHANTOM_DIRECTION = TRAINING_DIRECTION
LDCT_WINDOW = (-160.0, 240.0)  # HU: the window both low-dose CT images are clipped to, as the literature reports
LDCT_DOSE = 0.25
NOISE_FREE_SNR = 1.0e6  # MR noise sigma = white matter T1w signal / SNR: effectively zero


def head_mask(ct_hu: np.ndarray) -> np.ndarray:
    """Voxels of the head in a (z, y, x) CT: above -500 HU, holes filled slice by slice."""
    from ..normalization import fill_holes_per_slice

    return fill_holes_per_slice(ct_hu > -500)


def mr_range(target: np.ndarray, mask: np.ndarray) -> float:
    """The MR data range of PSNR/SSIM: the width of :func:`mr_window` (the target's 0.5-99.5 percentile range inside
    ``mask``, of the whole target when the mask is empty)."""
    lo, hi = mr_window(target, mask)
    return hi - lo


def mr_window(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles of ``image`` inside ``mask`` (of the whole image when the mask is empty): the
    grey window the real-image sections show and score MR in (:func:`mr_range` is its width)."""
    lo, hi = np.percentile(image[mask] if mask.any() else image.ravel(), [0.5, 99.5])
    return float(lo), float(hi)


def mean(values: list[float]) -> float:
    """The mean of per-subject values; NaN when there are none."""
    return float(np.mean(values)) if values else float("nan")


@dataclass
class EvalContext:
    """Shared by the sections: test subjects (cached), output folder, and what is known about them."""

    report_dir: Path
    n_subjects: int | None = None
    device: str = "cpu"
    _cache: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)
    used_test_seeds: list[int] = field(default_factory=list)

    @property
    def test_seeds(self) -> list[int]:
        """The held-out test subjects (the first ``n_subjects`` of the phantom's test split)."""
        from ..train.data import split_seeds

        seeds = split_seeds("test", self.n_subjects)
        self.used_test_seeds = seeds
        return seeds

    def seeds(self, split: str, count: int | None = None) -> list[int]:
        """The first ``count`` seeds (all when None) of the phantom's ``split`` ("train", "val", "test")."""
        from ..train.data import split_seeds

        return split_seeds(split, count)

    def subject(self, seed: int, keys: tuple[str, ...] = ("T1w", "T2w", "CT", "lesion_mask"), low_dose: bool = False,
                noise_free: bool = False) -> dict[str, np.ndarray]:
        """Arrays (z, y, x) of one phantom subject at 2 mm and its ``head`` mask; with ``low_dose`` the 25 %-dose
        and full-dose reconstructions ``CT_low_dose_0``/``CT_full_dose_0``; ``noise_free``: MR without noise."""
        from ..train.data import phantom_subject_arrays

        key = (seed, keys, low_dose, noise_free)
        if key not in self._cache:
            ld = {"dose_fraction": LDCT_DOSE, "realisations": 1} if low_dose else None
            arrays = dict(phantom_subject_arrays(seed, list(keys), SPACING_MM, low_dose=ld,
                                                 snr=NOISE_FREE_SNR if noise_free else None))
            arrays["head"] = arrays["head_mask"].astype(bool) if "head_mask" in arrays else head_mask(arrays["CT"])
            self._cache[key] = arrays
        return self._cache[key]

    def phantom(self, seed: int, keys: list[str], healthy: bool = False) -> dict[str, np.ndarray]:
        """Arrays (z, y, x) of one phantom subject at 2 mm (cached on disk, not here) with its ``head_mask``;
        ``healthy``: the subject's lesion-free twin."""
        from ..train.data import phantom_subject_arrays

        return phantom_subject_arrays(seed, keys, SPACING_MM, healthy=healthy)

    def run(self, task: str, volume: Volume, model: str, **options: Any) -> RunResult:
        """``task`` with the installed ``model`` (an id or a model folder) through :func:`MedGANLogic.run`, as a
        user runs it (with ``options``), in fp32 so the numbers do not depend on the CPU's bf16 (a fit to the scan,
        ``adapt=True``, runs in fp32 and takes no precision)."""
        from ..pipeline import run

        if not options.get("adapt"):
            options.setdefault("precision", "fp32")
        return run(task, volume, model=model, device=self.device, **options)

    def run_model(self, model_id: str, task: str, array: np.ndarray, modality: str,
                  contrast: str | None = None, **options: Any) -> np.ndarray:
        """The output array of :meth:`run` on ``array`` taken as a 2 mm ``modality`` (``contrast``) volume."""
        meta = {"modality": modality, **({"contrast": contrast} if contrast else {})}
        vol = Volume(array, spacing=(SPACING_MM,) * 3, direction=PHANTOM_DIRECTION, metadata=meta)
        return self.run(task, vol, model_id, **options).volume.array


@dataclass
class Target:
    """A goal of the issue: ``value`` compared with ``threshold`` by ``op`` (">", ">=" or "<")."""

    name: str
    value: float
    threshold: float
    op: str = ">"
    note_if_missed: str = ""

    @property
    def met(self) -> bool:
        if self.op == ">=":
            return bool(self.value >= self.threshold)
        return bool(self.value > self.threshold) if self.op == ">" else bool(self.value < self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "threshold": self.threshold, "op": self.op, "met": self.met,
                "note": "" if self.met else self.note_if_missed}


@dataclass
class SectionResult:
    """One section of the report: a table of ``metrics`` (method -> metric -> per-subject values) in ``units``,
    the ``targets`` it checks, PNG ``panels`` (file names in the report folder), extra ``info`` for the JSON, or
    the ``error`` that kept it from running."""

    title: str
    intro: str
    metrics: dict[str, dict[str, list[float]]]  # method -> metric -> per-subject values
    units: dict[str, str]
    targets: list[Target]
    panels: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


SectionFn = Callable[[EvalContext], SectionResult]


def card_passes(model_id: str, device: str) -> int:
    """The self-ensemble passes the card of ``model_id`` asks for on ``device`` (its default there:
    :func:`MedGANLogic.pipeline.ensemble_count`)."""
    from ..models.registry import get_model
    from ..pipeline import ensemble_count

    return ensemble_count(get_model(model_id), {}, device)


def installed(model_id: str) -> bool:
    """Whether a model of this id is installed (sections leave its rows or columns out when not)."""
    from ..models.registry import get_model

    try:
        get_model(model_id)
    except Exception:  # noqa: BLE001 - any failure to find it is reported the same way
        return False
    return True


def missing_models(title: str, model_ids: list[str]) -> SectionResult | None:
    """A "not evaluated" result for section ``title`` when any of ``model_ids`` is not installed; else None."""
    missing = [mid for mid in model_ids if not installed(mid)]
    if not missing:
        return None
    return SectionResult(title=title, intro="", metrics={}, units={}, targets=[],
                         error=f"model(s) not installed: {', '.join(missing)} (train them with `medgan train "
                               f"--recipe ...` and export to Resources/Models)")
