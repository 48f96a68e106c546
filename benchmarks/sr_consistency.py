"""Super-resolution with and without the input's measured data kept (``consistency``, :mod:`.tasks.superres`).

    python benchmarks/sr_consistency.py [--device auto] [--quick] [--models mr-sr-x2-inplane mr-sr-x2-throughplane]

The cases are validation phantoms 1000-1003 (never the test subjects of ``make eval``): T2w, T1w and FLAIR as the
phantom acquires them (Rician noise, SNR 30; ``sr_input_detail.case``), at 1 mm (alone and with slices averaged in
fives: 5 mm) and at 2 mm, then degraded x2 along the model's axes as its card says (through-plane: slices averaged
in pairs; in-plane: the central half of k-space kept). Two references: the acquisition itself, noise and all (as
``make eval-real`` scores a real scan, whose noise no model can know) and the same acquisition without noise. PSNR
in the head, gain over cubic B-spline onto the same grid, one pass (ensemble=1): the model as it was made
(``consistency=False``), with the measured data kept (the default), and B-spline with it kept (what consistency
alone gives). Writes ``sr_consistency.json``. ``--quick``: one subject, T2w, 1 mm only: checks that the script works.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse, script_parser, target, write_table_results  # noqa: E402
from sr_input_detail import case  # noqa: E402

from MedGANLogic.degradation import consistent_with  # noqa: E402
from MedGANLogic.evaluation.baselines import bspline_upsample  # noqa: E402
from MedGANLogic.evaluation.context import mr_range  # noqa: E402
from MedGANLogic.evaluation.metrics import psnr  # noqa: E402
from MedGANLogic.models.registry import get_model  # noqa: E402
from MedGANLogic.pipeline import run  # noqa: E402

CONTRASTS = ("T2w", "T1w", "FLAIR")
WAYS = ("model as made", "model, data kept", "B-spline, data kept")


def main() -> int:
    parser = script_parser(__doc__)
    args, device = parse(parser)
    models = args.models or ["mr-sr-x2-inplane", "mr-sr-x2-throughplane"]
    seeds, contrasts, grids = ((1000,), ("T2w",), ((1.0, 1),)) if args.quick else \
        ((1000, 1001, 1002, 1003), CONTRASTS, ((1.0, 1), (1.0, 5), (2.0, 1)))
    rows, targets = [], []
    for model in models:
        card = get_model(model)
        scale = tuple(int(s) for s in card.scale_factor)
        kind = card.extras["degradation"]
        for mm, thick in grids:
            for contrast in contrasts:
                gains = {(way, ref): [] for way in WAYS for ref in ("acquired", "noise-free")}
                for seed in seeds:
                    low, grid, clean, head = case(seed, contrast, thick, scale, kind, mm)
                    window = mr_range(clean, head)
                    base = bspline_upsample(low, grid)
                    outs = {way: run("superres", low, model=model, device=device, precision="fp32", ensemble=1,
                                     consistency=way == WAYS[1]).volume.array for way in WAYS[:2]}
                    outs[WAYS[2]] = consistent_with(base, low.array, scale, kind)
                    for ref_name, ref in (("acquired", grid.array), ("noise-free", clean)):
                        floor = psnr(base, ref, head, window)
                        for way, out in outs.items():
                            gains[(way, ref_name)].append(psnr(out, ref, head, window) - floor)
                rows.append({"model": model, "case": f"{contrast}, {mm:g} mm pixels, {mm * thick:g} mm slices",
                             "_gains": {f"{w} / {r}": float(np.mean(g)) for (w, r), g in gains.items()}})
                rows[-1].update({k: f"{v:+.2f}" for k, v in rows[-1]["_gains"].items()})
                print(rows[-1]["case"], rows[-1]["_gains"], flush=True)
        keys = list(rows[-1]["_gains"])
        means = {k: float(np.mean([r["_gains"][k] for r in rows if r["model"] == model])) for k in keys}
        rows.append({"model": model, "case": "mean", **{k: f"{v:+.2f}" for k, v in means.items()}})
        kept, made = means[f"{WAYS[1]} / acquired"], means[f"{WAYS[0]} / acquired"]
        targets.append(target(f"{model}: keeping the measured data raises the mean gain over B-spline against the "
                              f"acquired image", f"{made:+.2f} -> {kept:+.2f} dB", kept > made))
    columns = [f"{w} / {r}" for r in ("acquired", "noise-free") for w in WAYS]
    write_table_results("sr_consistency", args, device, targets,
                        f"Gain over cubic B-spline (dB), validation phantoms {', '.join(map(str, seeds))} (Rician "
                        f"noise, SNR 30), one pass; against the acquired (noisy) image and against its noise-free "
                        f"twin.", rows, ["model", "case", *columns])
    return 0


if __name__ == "__main__":
    sys.exit(main())
