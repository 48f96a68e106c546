"""Fit to this scan, CT: accuracy and time of the recorrupted-to-recorrupted fit against its step count (issue 17).

    python benchmarks/adapt_ct.py [--device auto] [--quick] [--steps 1500 3000 6000]

The case is the real tuning CT of ``make eval-real`` (lung2 from the pyradiomics source archive, fetched into
``.cache/real`` by ``python -m MedGANLogic.evaluation.real_data fetch``): its 8 central axial slices, a 128-pixel
box of the body, with Gaussian noise smoothed by a one-pixel Gaussian (SD 30 HU, seed 7) added, exactly as the
report's tuning case; scored in the body in the [-160, 240] HU window against the image before the noise. Each
step count is its own fit (seed 0, CT's default method and settings), so the figures do not depend on the
machine's speed; the seconds do, and show what a CPU budget buys. Beside them: non-local means with its strength
tuned on this same image (an upper bound for it). Not in ``run_all.py`` (it needs the real-image cache); writes
``adapt_ct.json``. ``--quick``: steps 20 and 40, checks that the script works.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, parse, script_parser, table, target, write_results  # noqa: E402

from MedGANLogic.adapt import FitBudget, fit_denoise  # noqa: E402
from MedGANLogic.evaluation.real import RealContext, windowed_scores  # noqa: E402
from MedGANLogic.evaluation.real_adapt import CT_TUNING, noisy_case  # noqa: E402
from MedGANLogic.evaluation.sections.adapt import best_factor, nlm, stabilised  # noqa: E402


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--steps", type=int, nargs="*", default=[1500, 3000, 6000], help="step counts")
    args, device = parse(parser, quick={"steps": [20, 40]})
    ctx = RealContext(report_dir=Path(os.environ.get("TMPDIR", "/tmp")) / "medgan-adapt-ct")
    noisy, clean, mask, modality = noisy_case(ctx, CT_TUNING, seed=7)
    forward, inverse, sd = stabilised(noisy, modality)
    scores: dict[float, float] = {}

    def nlm_db_at(f: float) -> float:
        key = round(float(f), 3)  # how best_factor names the factors it returns
        scores[key] = windowed_scores(inverse(nlm(forward, sd, f)), clean, mask)[0]
        return scores[key]

    factor = best_factor(nlm_db_at)
    nlm_db = scores[factor]
    noisy_db = windowed_scores(noisy.array, clean, mask)[0]
    rows = []
    for steps in args.steps:
        started = time.perf_counter()
        fit = fit_denoise(noisy, "CT", budget=FitBudget(seconds=86400.0, max_steps=steps), seed=0, device=device)
        total = time.perf_counter() - started
        db = windowed_scores(fit.volume.array, clean, mask)[0]
        rows.append({"steps": steps, "fit s": f"{fit.record.seconds:.0f}", "steps/s":
                     f"{steps / max(fit.record.seconds, 1e-9):.1f}", "total s": f"{total:.0f}",
                     "PSNR dB": f"{db:.2f}", "vs NLM dB": f"{db - nlm_db:+.2f}", "_db": db})
        print(rows[-1], flush=True)
    best = rows[-1]
    md = [f"Device: {device_name(device)}{' (--quick)' if args.quick else ''}. Real CT {CT_TUNING} "
          f"{noisy.shape} (z, y, x), correlated noise SD 30 HU added: noisy {noisy_db:.2f} dB, non-local means tuned "
          f"on it (h = {factor:.2g} SD) {nlm_db:.2f} dB. Each row is its own fit (seed 0).", "",
          table(rows, ["steps", "fit s", "steps/s", "total s", "PSNR dB", "vs NLM dB"]), ""]
    print("\n".join(md))
    targets = [target(f"adapt denoise CT ({CT_TUNING}): PSNR above tuned non-local means after {best['steps']} steps",
                      f"{best['_db']:.2f} vs {nlm_db:.2f} dB", best["_db"] > nlm_db)]
    write_results("adapt_ct", args, device, targets, md,
                  rows=[{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], nlm_db=nlm_db,
                  noisy_db=noisy_db, nlm_factor=factor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
