"""``make eval-real``: the shipped models on real images nobody on this project made.

    python -m MedGANLogic.evaluation.real --report Testing/Reports [--cache DIR] [--sections a,b]

writes ``real.md`` (tables, the real-image targets of the synthetic-to-real issue met or missed), ``real.json``
(every number, per case) and ``real_*.png`` panels. The images come from :mod:`.real_data` (fetched once by
``make eval-real``); the rough tissue masks the checks need are made by :mod:`.real_masks`. Every model runs
through the public engine API on the CPU in fp32, exactly as a user runs it; each run's time and warnings are
printed and reported. The sections live in :mod:`.real_ldct`, :mod:`.real_mr` and :mod:`.real_adapt`, registered
in :data:`REAL_SECTIONS`.

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
from .context import LDCT_WINDOW, SectionResult
from .metrics import psnr, ssim
from .report import ReportError, render_results, update_lines


def windowed_scores(pred_hu: np.ndarray, reference_hu: np.ndarray, mask: np.ndarray,
                    window: tuple[float, float] = LDCT_WINDOW) -> tuple[float, float]:
    """(PSNR dB, SSIM) of a CT against its reference, both clipped to ``window`` HU, data range = window width.

    Arrays are (y, x) slices or (z, y, x) stacks in HU; ``mask`` (same shape) selects the scored pixels. SSIM is
    2D per slice (11 x 11 Gaussian window) averaged over the masked pixels.
    """
    lo, hi = window
    p, t, m = (np.asarray(a) for a in (pred_hu, reference_hu, mask))
    if p.ndim == 2:
        p, t, m = p[None], t[None], m[None]
    p, t = np.clip(p, lo, hi), np.clip(t, lo, hi)
    return psnr(p, t, m.astype(bool), hi - lo), ssim(p, t, m.astype(bool), hi - lo)


# --- the context the sections share -----------------------------------------------------------------------------
@dataclass
class RealContext:
    """Real images (loaded once), the report folder, and the log of every model run."""

    report_dir: Path
    cache: Path | None = None
    device: str = "cpu"
    runs: list[dict[str, Any]] = field(default_factory=list)
    store: dict[str, Any] = field(default_factory=dict)  # computations shared between sections
    section: str = ""  # the section now running: each run records it (``--update`` replaces a section's runs)
    _images: dict[str, Volume] = field(default_factory=dict)

    def image(self, name: str) -> Volume:
        if name not in self._images:
            self._images[name] = real_data.load(name, self.cache)
        return self._images[name]

    def label(self, name: str) -> np.ndarray:
        """The tumour label of ``name`` as a (z, y, x) bool array on the image's grid."""
        return real_data.load_label(name, self.cache).array > 0

    def run(self, task: str, volume: Volume, model: str, case: str, **options: Any) -> Any:
        """``task`` with ``model`` on ``volume`` through the engine's plan and execute steps; logs time, the
        plan's notes (what the engine does to meet the model) and its warnings.

        Returns the :class:`~MedGANLogic.pipeline.RunResult`, or None when the engine refused or failed (the
        error is logged with the run and printed; the section reports the case as not run).
        """
        from .. import pipeline
        from ..errors import MedGANError

        if not options.get("adapt"):  # a fit to the scan runs in fp32 and takes no precision
            options.setdefault("precision", "fp32")  # numbers that do not depend on the CPU's bf16
        record: dict[str, Any] = {"model": model, "case": case, "section": self.section,
                                  "options": {k: v for k, v in options.items() if k != "precision"}}
        started = time.perf_counter()
        result, messages = None, []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                plan = pipeline.plan(task, volume, model=model, device=self.device, **options)
                record["notes"] = list(plan.notes)  # what the engine does to meet the model (resampling, ...)
                messages += list(plan.warnings)
                result = pipeline.execute(plan)
            except MedGANError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
        messages += [str(w.message) for w in caught]
        record["seconds"] = round(time.perf_counter() - started, 2)
        record["warnings"] = list(dict.fromkeys(messages))
        self.runs.append(record)
        note = f"error: {record['error']}" if "error" in record else f"{record['seconds']:.1f} s"
        print(f"  {model} on {case}: {note}" + "".join(f"\n    note: {n}" for n in record.get("notes", []))
              + "".join(f"\n    warning: {w}" for w in record["warnings"]),
              file=sys.stderr, flush=True)
        return result


RealSectionFn = Callable[[RealContext], SectionResult]
REAL_SECTIONS: Registry[RealSectionFn] = Registry(
    "real-data report section", package=__package__, modules=(".real_ldct", ".real_mr", ".real_adapt"),
    error=ReportError)


def unit_range(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``image`` mapped from [lo, hi] to [0, 1] (clipped), for panels."""
    return np.clip((np.asarray(image, np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def axial_view(image: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """A (y, x) axial slice arranged for :func:`~.panels.save_panel` (which shows rows bottom-up) so that it
    appears as radiologists read it: anterior at the top, the patient's right on the left of the picture.
    ``direction`` is the volume's 3x3 ITK direction (columns: the i, j, k axes in LPS)."""
    out = np.asarray(image)
    if direction[1, 1] > 0:  # rows run anterior -> posterior: without this, posterior would end up on top
        out = out[::-1]
    if direction[0, 0] < 0:  # columns run towards the patient's right
        out = out[:, ::-1]
    return out


def save_real_panel(ctx: RealContext, name: str, rows: list[tuple[str, list[np.ndarray]]], titles: list[str]) -> str:
    """``real_<name>.png``: grey images already scaled to [0, 1] (axial ones through :func:`axial_view`), each
    resized to 160 x 160 pixels (small files)."""
    from skimage.transform import resize

    rows = [(label, [resize(img, (160, 160), order=1, anti_aliasing=True) for img in images])
            for label, images in rows]
    from .panels import save_panel

    return save_panel(ctx.report_dir / f"real_{name}.png", rows, [(0.0, 1.0)] * len(titles), titles)


# --- the report ------------------------------------------------------------------------------------------------
def render_markdown(results: dict[str, SectionResult], meta: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    """``real.md``: how it was made, the images, every target, one table per section, then every model run."""
    lines = ["# MedGAN on real images", "",
             "Generated by `make eval-real` (`python -m MedGANLogic.evaluation.real --report Testing/Reports`); do not "
             "edit by hand. The shipped models never saw a real scan: they were trained on the MedGAN phantom or on "
             "domain-randomised heads made from the same template (each card says which). Research use, not for "
             "diagnosis.", "",
             f"- Generated {meta['generated']} in {meta['seconds']:.0f} s on {meta['device']} "
             f"({meta['cpu_count']} CPU cores; torch threads {meta['torch_threads']}).",
             *update_lines(meta.get("updates", []), "real.json", "`--sections ... --update`"),
             "- Mean ± standard deviation over the cases a metric applies to (per case in `real.json`).", "",
             "## Images", "", "| image | package | shows | tumour label | geometry |", "|---|---|---|---|---|"]
    for row in real_data.inventory():
        lines.append(f"| {row['image']} | {row['package']} | {row['shows']} | {row['label'] or '–'} | "
                     f"{row['assumed']} |")
    lines.append("")

    lines += render_results(list(results.values()))
    lines += ["", "## Model runs", "", "Every run through the engine: seconds (summed over the runs of a row), what "
              "the engine did to meet the model (resampling, reorientation) and the warnings it gave.", "",
              "| model | case | runs | seconds | engine notes, warnings, errors |", "|---|---|---|---|---|"]
    for row in summarise_runs(runs):
        notes = "; ".join(row["errors"] + row["warnings"]) or "none"
        lines.append(f"| {row['model']} | {row['case']} | {row['runs']} | {row['seconds']:.1f} | {notes} |")
    return "\n".join(lines) + "\n"


def summarise_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs grouped by (model, case): count, total seconds, distinct notes and warnings (as ``warnings``) and
    errors, in first-seen order."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        row = rows.setdefault((r["model"], r["case"]), {"model": r["model"], "case": r["case"], "runs": 0,
                                                        "seconds": 0.0, "warnings": [], "errors": []})
        row["runs"] += 1
        row["seconds"] += r["seconds"]
        for w in r.get("notes", []) + r.get("warnings", []):
            if w not in row["warnings"]:
                row["warnings"].append(w)
        if "error" in r and r["error"] not in row["errors"]:
            row["errors"].append(r["error"])
    return list(rows.values())


def evaluate_real(report_dir: str | os.PathLike, *, cache: str | os.PathLike | None = None,
                  sections: list[str] | None = None, device: str = "cpu", update: bool = False) -> dict[str, Any]:
    """Run the real-data sections, write ``real.md``, ``real.json`` and the panels; returns the JSON data.

    ``update=True``: run only ``sections`` and keep every other section of the ``real.json`` already in
    ``report_dir`` (with its model runs; runs recorded by a re-run section are replaced), in registry order; the
    header then lists each update. Without an existing report it is an ordinary run.

    Raises:
        ReportError: an unknown section; a report to update that is broken.
        RealDataMissingError: the cache lacks an image (the message says to run ``make eval-real``).
    """
    import torch

    names = sections or REAL_SECTIONS.names()
    fns = {n: REAL_SECTIONS.get(n) for n in names}  # an unknown section fails first (ReportError)
    missing = real_data.missing_files(cache)
    if missing:
        raise real_data.RealDataMissingError(
            f"{len(missing)} real image file(s) missing or changed in {real_data.cache_dir(cache)} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): run `{real_data.MAKE_TARGET}` "
            f"(it fetches them once).")
    report_dir = Path(report_dir)
    previous_path = report_dir / "real.json"
    report_dir.mkdir(parents=True, exist_ok=True)
    from .report import _finite, read_previous, results_json, section_from_json

    if update:
        read_previous(previous_path)  # a broken report fails now, not after the sections
    ctx = RealContext(report_dir=report_dir, cache=Path(cache) if cache else None, device=device)
    start = time.perf_counter()
    results = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        print(f"real-data section {name} ...", file=sys.stderr, flush=True)
        ctx.section = name
        results[name] = fn(ctx)
        print(f"  section {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    meta = {"generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - start, "device": device, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    runs = ctx.runs
    # read when the sections are done, not before: another update that finished meanwhile (other sections, run
    # beside this one) is kept
    previous = read_previous(previous_path) if update else None
    if previous is not None:
        update_meta = {"sections": sorted(names), "generated": meta["generated"], "seconds": meta["seconds"],
                       "device": device}
        meta = {**previous["meta"], "updates": [*previous["meta"].get("updates", []), update_meta]}
        kept = {n: section_from_json(d) for n, d in previous["sections"].items()
                if n in REAL_SECTIONS and n not in results}
        order = [n for n in REAL_SECTIONS.names() if n in kept or n in results]
        results = {n: results.get(n) or kept[n] for n in order}
        # runs of a re-run section are replaced; runs recorded before runs named their section are dropped: every
        # section names its runs now, so they are copies of runs kept under their section, or of sections since
        # changed (they described models and cards no longer there)
        runs = [r for r in previous.get("runs", []) if r.get("section") is not None
                and r["section"] not in names] + ctx.runs
    data = {"meta": meta, "images": real_data.inventory(), "runs": runs,
            **results_json(list(results), list(results.values()))}
    (report_dir / "real.json").write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (report_dir / "real.md").write_text(render_markdown(results, meta, runs), encoding="utf-8")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.evaluation.real", description=__doc__.split("\n")[0])
    parser.add_argument("--report", default="Testing/Reports", help="output folder (default Testing/Reports)")
    parser.add_argument("--cache", default=None, help="real-image cache (default $MEDGAN_REAL_DATA or .cache/real)")
    parser.add_argument("--sections", default=None, help=f"comma-separated subset of {', '.join(REAL_SECTIONS)}")
    parser.add_argument("--update", action="store_true",
                        help="with --sections: keep the other sections of the real.json already in --report")
    args = parser.parse_args(argv)
    if args.update and not args.sections:
        parser.error("--update needs --sections (the sections to run again)")
    try:
        data = evaluate_real(args.report, cache=args.cache, update=args.update,
                             sections=args.sections.split(",") if args.sections else None)
    except (real_data.RealDataMissingError, ReportError) as exc:  # missing images, an unknown section or a report
        print(f"error: {exc}", file=sys.stderr)  # to update that is no report: one line, before any section ran
        return 2
    print(f"real-image targets met: {data['targets_met']} of {data['targets_total']}; report: "
          f"{Path(args.report) / 'real.md'} ({data['meta']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":  # the sections register with the imported module, not with __main__
    from MedGANLogic.evaluation.real import main as _main

    raise SystemExit(_main())
