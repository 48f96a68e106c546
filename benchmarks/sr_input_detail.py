"""Super-resolution of fine-pixel scans: resampled into the model's voxel size, with and without the input grid's
detail added back (``input_detail``, :mod:`MedGANLogic.tasks.superres`), and on the native grid.

    python benchmarks/sr_input_detail.py [--device auto] [--quick] [--models mr-sr-x2-throughplane]

The cases are validation phantoms 1000-1003 (never the test subjects of ``make eval``) acquired at 1 mm with Rician
noise (SNR 30) as T2w, T1w and FLAIR, alone and with slices averaged in fives (5 mm), degraded x2 along the model's
axis as in training (through-plane: slices averaged in pairs; in-plane: k-space truncated); reference: the same
acquisition without noise; PSNR in the head, gain over cubic B-spline onto the same grid, one pass (ensemble=1).
A through-plane model trained at 1.5-4.5 mm pixels sees these 1 mm pixels resampled to 1.5 mm. Writes
``sr_input_detail.json``. ``--quick``: one subject, T2w, 1 mm only: checks that the script works.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse, script_parser, target, write_table_results  # noqa: E402

from MedGANLogic.evaluation.baselines import bspline_upsample  # noqa: E402
from MedGANLogic.evaluation.context import mr_range  # noqa: E402
from MedGANLogic.evaluation.metrics import psnr  # noqa: E402
from MedGANLogic.models.registry import get_model  # noqa: E402
from MedGANLogic.orientation import TRAINING_DIRECTION  # noqa: E402
from MedGANLogic.pipeline import run  # noqa: E402
from MedGANLogic.simulate import superres_pair  # noqa: E402
from MedGANLogic.simulate.lowres import thick_slices  # noqa: E402
from MedGANLogic.train.data.sources import phantom_subject_arrays  # noqa: E402
from MedGANLogic.volume import Volume  # noqa: E402

WAYS = {"resampled": {"input_detail": False}, "native grid": {"native": True}, "resampled + input detail": {}}


def case(seed: int, contrast: str, thick: int, scale: tuple[int, int, int], kind: str, mm: float = 1.0):
    """(degraded input, output grid (the noisy acquisition), noise-free reference array, head mask) of one validation
    phantom acquired at ``mm`` with its slices averaged in ``thick``s."""
    acquired = phantom_subject_arrays(seed, [contrast], mm)
    clean = phantom_subject_arrays(seed, [contrast], mm, snr=1e9)
    head = acquired["head_mask"] > 0
    acq = Volume(acquired[contrast], spacing=(mm,) * 3, direction=TRAINING_DIRECTION,
                 metadata={"modality": "MR", "contrast": contrast})
    ref = Volume(clean[contrast], spacing=(mm,) * 3, direction=TRAINING_DIRECTION)
    if thick > 1:
        acq, ref = thick_slices(acq, thick, 0), thick_slices(ref, thick, 0)
        n = acq.shape[0]
        head = head[:n * thick].reshape(n, thick, *head.shape[1:]).any(1)
    low, grid = superres_pair(acq, scale, kind)
    crop = tuple(slice(0, k) for k in grid.shape)
    return low, grid, ref.array[crop], head[crop]


def main() -> int:
    parser = script_parser(__doc__)
    args, device = parse(parser)
    models = args.models or ["mr-sr-x2-throughplane"]
    seeds, contrasts, thicks = ((1000,), ("T2w",), (1,)) if args.quick else \
        ((1000, 1001, 1002, 1003), ("T2w", "T1w", "FLAIR"), (1, 5))
    rows, targets = [], []
    for model in models:
        card = get_model(model)
        scale = tuple(int(s) for s in card.scale_factor)
        kind = "kspace_truncate" if scale[0] == 1 else "thick_slices"
        for thick in thicks:
            for contrast in contrasts:
                gains: dict[str, list[float]] = {way: [] for way in WAYS}
                for seed in seeds:
                    low, grid, ref, head = case(seed, contrast, thick, scale, kind)
                    rng = mr_range(ref, head)
                    base = psnr(bspline_upsample(low, grid), ref, head, rng)
                    for way, options in WAYS.items():
                        out = run("superres", low, model=model, device=device, precision="fp32", ensemble=1,
                                  **options).volume.array
                        gains[way].append(psnr(out, ref, head, rng) - base)
                rows.append({"model": model, "case": f"{contrast}, 1 mm pixels, {thick} mm slices",
                             **{way: f"{np.mean(g):+.2f}" for way, g in gains.items()},
                             "_gains": {way: float(np.mean(g)) for way, g in gains.items()}})
                print(rows[-1]["case"], rows[-1]["_gains"], flush=True)
        means = {way: float(np.mean([r["_gains"][way] for r in rows if r["model"] == model])) for way in WAYS}
        rows.append({"model": model, "case": "mean", **{way: f"{v:+.2f}" for way, v in means.items()}})
        targets.append(target(f"{model}: input detail added back beats resampling alone and the native grid (mean "
                              f"gain over B-spline)", " / ".join(f"{v:+.2f}" for v in means.values()) + " dB",
                              means["resampled + input detail"] > max(means["resampled"], means["native grid"])))
    write_table_results("sr_input_detail", args, device, targets,
                        f"Gain over cubic B-spline (dB), validation phantoms {', '.join(map(str, seeds))}, one pass.",
                        rows, ["model", "case", *WAYS])
    return 0


if __name__ == "__main__":
    sys.exit(main())
