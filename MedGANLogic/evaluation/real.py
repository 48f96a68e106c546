"""``make eval-real``: the shipped models on real images nobody on this project made.

    python -m MedGANLogic.evaluation.real --report Testing/Reports [--cache DIR] [--sections a,b]

writes ``real.md`` (tables, the real-image targets of the synthetic-to-real issue met or missed), ``real.json``
(every number, per case) and ``real_*.png`` panels. The images come from :mod:`.real_data` (fetched once by
``make eval-real``); the rough tissue masks the checks need are made by :mod:`.real_masks`. Every model runs
through the public engine API on the CPU in fp32, exactly as a user runs it; each run's time and warnings are
printed and reported. The sections live in :mod:`.real_ldct` and :mod:`.real_mr`, registered in
:data:`REAL_SECTIONS`.

Metrics come from the evaluation package (PSNR/SSIM with an explicit data range, AUROC); low-dose CT is scored
in the [-160, 240] HU window (data range 400 HU), as the low-dose CT literature reports.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import Registry
from ..volume import Volume
from . import real_data

LDCT_WINDOW = (-160.0, 240.0)


# --- shared pieces that come from the evaluation package ---------------------------------------------------------
def _evaluation() -> Any:
    from .. import evaluate

    return evaluate


def windowed_scores(pred_hu: np.ndarray, reference_hu: np.ndarray, mask: np.ndarray,
                    window: tuple[float, float] = LDCT_WINDOW) -> tuple[float, float]:
    """(PSNR dB, SSIM) of a CT against its reference, both clipped to ``window`` HU, data range = window width.

    Arrays are (y, x) slices or (z, y, x) stacks in HU; ``mask`` (same shape) selects the scored pixels. SSIM is
    2D per slice (11 x 11 Gaussian window) averaged over the masked pixels.
    """
    ev = _evaluation()
    lo, hi = window
    p, t, m = (np.asarray(a) for a in (pred_hu, reference_hu, mask))
    if p.ndim == 2:
        p, t, m = p[None], t[None], m[None]
    p, t = np.clip(p, lo, hi), np.clip(t, lo, hi)
    return ev.psnr(p, t, m.astype(bool), hi - lo), ev.ssim(p, t, m.astype(bool), hi - lo)


# --- the context the sections share -----------------------------------------------------------------------------
@dataclass
class RealContext:
    """Real images (loaded once), the report folder, and the log of every model run."""

    report_dir: Path
    cache: Path | None = None
    device: str = "cpu"
    runs: list[dict[str, Any]] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)  # computations shared between sections
    _images: dict[str, Volume] = field(default_factory=dict)

    def image(self, name: str) -> Volume:
        if name not in self._images:
            self._images[name] = real_data.load(name, self.cache)
        return self._images[name]

    def label(self, name: str) -> np.ndarray:
        """The tumour label of ``name`` as a (z, y, x) bool array on the image's grid."""
        return real_data.load_label(name, self.cache).array > 0

    def run(self, task: str, volume: Volume, model: str, case: str, **options: Any) -> Any:
        """``task`` with ``model`` on ``volume`` through the engine's public API; logs time and warnings.

        Returns the :class:`~MedGANLogic.pipeline.RunResult`, or None when the engine refused or failed (the
        error is logged with the run and printed; the section reports the case as not run).
        """
        from .. import pipeline
        from ..errors import MedGANError

        options.setdefault("precision", "fp32")  # numbers that do not depend on the CPU's bf16
        record: dict[str, Any] = {"model": model, "case": case, "options": {k: v for k, v in options.items()
                                                                           if k != "precision"}}
        started = time.perf_counter()
        result, messages = None, []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if hasattr(pipeline, "plan"):  # plan/execute: every decision of the run, with its warnings
                    plan = pipeline.plan(task, volume, model=model, device=self.device, **options)
                    messages += [str(w) for w in getattr(plan, "warnings", [])]
                    result = pipeline.execute(plan)
                else:
                    result = pipeline.run(task, volume, model=model, device=self.device, **options)
            except MedGANError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
        messages += [str(w.message) for w in caught]
        record["seconds"] = round(time.perf_counter() - started, 2)
        record["warnings"] = list(dict.fromkeys(messages))
        if result is not None:
            prov = result.provenance
            record["decisions"] = {k: prov[k] for k in ("resampled_from", "reoriented", "bias_corrected",
                                                         "contrast_estimated", "forced_despite") if prov.get(k)}
        self.runs.append(record)
        note = f"error: {record['error']}" if "error" in record else f"{record['seconds']:.1f} s"
        print(f"  {model} on {case}: {note}" + "".join(f"\n    warning: {w}" for w in record["warnings"]),
              file=sys.stderr, flush=True)
        return result


SectionResult = Any  # the evaluation package's SectionResult
RealSectionFn = Callable[[RealContext], SectionResult]
REAL_SECTIONS: Registry[RealSectionFn] = Registry(
    "real-data report section", package=__package__, modules=(".real_ldct", ".real_mr"), error=ValueError)


def not_run(title: str, reason: str) -> SectionResult:
    """A section that could not be evaluated, with the reason (a missing model, an engine refusal)."""
    ev = _evaluation()
    return ev.SectionResult(title=title, intro="", metrics={}, units={}, targets=[], error=reason)


def missing_model(title: str, model_ids: list[str]) -> SectionResult | None:
    from ..models.registry import get_model

    missing = []
    for mid in model_ids:
        try:
            get_model(mid)
        except Exception:  # noqa: BLE001 - any failure to find it is reported the same way
            missing.append(mid)
    return not_run(title, f"model(s) not installed: {', '.join(missing)}") if missing else None


def unit_range(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``image`` mapped from [lo, hi] to [0, 1] (clipped), for panels."""
    return np.clip((np.asarray(image, np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def save_real_panel(ctx: RealContext, name: str, rows: list[tuple[str, list[np.ndarray]]], titles: list[str]) -> str:
    """``real_<name>.png``: grey images already scaled to [0, 1], each resized to 160 x 160 pixels (small files)."""
    from skimage.transform import resize

    rows = [(label, [resize(img, (160, 160), order=1, anti_aliasing=True) for img in images])
            for label, images in rows]
    return _evaluation().save_panel(ctx.report_dir / f"real_{name}.png", rows, [(0.0, 1.0)] * len(titles), titles)


# --- the report ------------------------------------------------------------------------------------------------
def _fmt(value: float, unit: str) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.4f}" if unit == "" and abs(value) <= 1.0 else f"{value:.2f}"


def _finite(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def render_markdown(results: dict[str, SectionResult], meta: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """``real.md``: how it was made, the images, every target, one table per section, then every model run."""
    lines = ["# MedGAN on real images", "",
             "Generated by `make eval-real` (`python -m MedGANLogic.evaluation.real --report Testing/Reports`); do not "
             "edit by hand. The shipped models were trained on the MedGAN phantom only; these are their first "
             "measurements on real scans. Research use, not for diagnosis.", "",
             f"- Generated {meta['generated']} in {meta['seconds']:.0f} s on {meta['device']} "
             f"({meta['cpu_count']} CPU cores; torch threads {meta['torch_threads']}).",
             "- Mean over cases (per-case values in `real.json`); – where a metric does not apply.", "",
             "## Images", "", "| image | package | shows | tumour label | geometry |", "|---|---|---|---|---|"]
    for row in real_data.inventory():
        lines.append(f"| {row['image']} | {row['package']} | {row['shows']} | {row['label'] or '–'} | "
                     f"{row['assumed']} |")
    targets = [t for r in results.values() for t in r.targets]
    lines += ["", "## Targets", "", f"**{sum(t.met for t in targets)} of {len(targets)} real-image targets met.**", "",
              "| target | value | threshold | result |", "|---|---|---|---|"]
    for t in targets:
        op = {">": ">", ">=": "≥", "<": "<"}[t.op]
        lines.append(f"| {t.name} | {t.value:.4g} | {op} {t.threshold:.4g} | {'met' if t.met else '**MISSED**'} |")
    for r in results.values():
        lines += ["", f"## {r.title}", ""]
        if r.error:
            lines.append(f"**Not evaluated**: {r.error}.")
            continue
        lines += [r.intro, ""]
        names = list(next(iter(r.metrics.values())).keys())
        lines += ["| method | " + " | ".join(f"{m} ({r.units[m]})" if r.units.get(m) else m for m in names) + " |",
                  "|---|" + "---|" * len(names)]
        for method, values in r.metrics.items():
            lines.append(f"| {method} | " + " | ".join(_fmt(_nanmean(values.get(m, [])), r.units.get(m, ""))
                                                       for m in names) + " |")
        lines += [f"\n![{r.title}]({p})" for p in r.panels]
    lines += ["", "## Model runs", "", "Every run through the engine: seconds (summed over the runs of a row), what "
              "the engine decided (e.g. forced despite a contrast mismatch) and the warnings it gave.", "",
              "| model | case | runs | seconds | decisions, warnings, errors |", "|---|---|---|---|---|"]
    for row in summarise_runs(runs):
        notes = "; ".join(row["errors"] + row["warnings"]) or "none"
        lines.append(f"| {row['model']} | {row['case']} | {row['runs']} | {row['seconds']:.1f} | {notes} |")
    return "\n".join(lines) + "\n"


def summarise_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs grouped by (model, case): count, total seconds, distinct warnings and errors, in first-seen order."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        row = rows.setdefault((r["model"], r["case"]), {"model": r["model"], "case": r["case"], "runs": 0,
                                                        "seconds": 0.0, "warnings": [], "errors": []})
        row["runs"] += 1
        row["seconds"] += r["seconds"]
        for w in [f"{k}: {v}" for k, v in r.get("decisions", {}).items()] + r.get("warnings", []):
            if w not in row["warnings"]:
                row["warnings"].append(w)
        if "error" in r and r["error"] not in row["errors"]:
            row["errors"].append(r["error"])
    return list(rows.values())


def evaluate_real(report_dir: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                  sections: list[str] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Run the real-data sections, write ``real.md``, ``real.json`` and the panels; returns the JSON data.

    Raises:
        RealDataMissingError: the cache lacks an image (the message says to run ``make eval-real``).
    """
    import torch

    missing = real_data.missing_files(cache)
    if missing:
        raise real_data.RealDataMissingError(
            f"{len(missing)} real image file(s) missing or changed in {real_data.cache_dir(cache)} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): run `{real_data.MAKE_TARGET}` "
            f"(it fetches them once).")
    names = sections or REAL_SECTIONS.names()
    fns = {n: REAL_SECTIONS.get(n) for n in names}
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    ctx = RealContext(report_dir=report_dir, cache=Path(cache) if cache else None, device=device)
    start = time.perf_counter()
    results = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        print(f"real-data section {name} ...", file=sys.stderr, flush=True)
        results[name] = fn(ctx)
        print(f"  section {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    meta = {"generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - start, "device": device, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    data = {"meta": meta, "images": real_data.inventory(), "runs": ctx.runs, "sections": {
        name: {"title": r.title, "error": r.error, "units": r.units, "panels": r.panels, "info": r.info,
               "metrics": {m: {k: {"mean": _nanmean(v), "per_case": v} for k, v in d.items()}
                           for m, d in r.metrics.items()},
               "targets": [t.as_dict() for t in r.targets]} for name, r in results.items()}}
    data["targets_met"] = sum(t["met"] for s in data["sections"].values() for t in s["targets"])
    data["targets_total"] = sum(len(s["targets"]) for s in data["sections"].values())
    (report_dir / "real.json").write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")
    (report_dir / "real.md").write_text(render_markdown(results, meta, ctx.runs))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.evaluation.real", description=__doc__.split("\n")[0])
    parser.add_argument("--report", default="Testing/Reports", help="output folder (default Testing/Reports)")
    parser.add_argument("--cache", default=None, help="real-image cache (default $MEDGAN_REAL_DATA or .cache/real)")
    parser.add_argument("--sections", default=None, help=f"comma-separated subset of {', '.join(REAL_SECTIONS)}")
    args = parser.parse_args(argv)
    try:
        data = evaluate_real(args.report, cache=args.cache,
                             sections=args.sections.split(",") if args.sections else None)
    except real_data.RealDataMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"real-image targets met: {data['targets_met']} of {data['targets_total']}; report: "
          f"{Path(args.report) / 'real.md'} ({data['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":  # the sections register with the imported module, not with __main__
    from MedGANLogic.evaluation.real import main as _main

    raise SystemExit(_main())
