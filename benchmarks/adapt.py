"""Fit to this scan: fitting speed against the budget, and the accuracy reached after each budget (issue 17).

    python benchmarks/adapt.py [--device auto] [--quick] [--budgets 60 120 300] [--slices N]

Default budgets: 60, 120 and 300 s on a CPU; 10, 20 and 40 s on a GPU.

On one phantom subject (2 mm, lesion-free; its noise-free T2w is the reference), cut to ``--slices`` axial slices
around the middle of the head (default: all):
  * super-resolution: the noise-free T2w degraded to thick slices (``--factor`` axial slices averaged, a box
    profile), fitted with :func:`MedGANLogic.adapt.fit_superres` from scratch for each budget; PSNR in the head
    against the 2 mm T2w, beside cubic B-spline interpolation onto the same grid (the report's baseline);
  * denoising: the T2w at SNR 8 (Rician), fitted with :func:`MedGANLogic.adapt.fit_denoise` for each budget,
    starting from the shipped MR fit start as ``MedGANLogic.run("denoise", ..., adapt=True)`` does;
    PSNR in the head against the noise-free T2w, beside the noisy input and non-local means (skimage, patch 5,
    search 6, h = 0.8 sigma with sigma estimated from the image: the untuned use, not the report's tuned one).
Each budget is its own fit (seed 0), bound by the seconds (the step limit is out of reach). Speed: steps per
second, and the pass over the volume after fitting in seconds per million output voxels. Writes ``adapt.json``
(markdown, targets) and ``adapt.png`` (PSNR against the budget). ``--quick``: 12 slices, budgets of 3 and 6 s;
it checks that the script works, its figures mean nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, out_dir, parse, save, script_parser, table, target  # noqa: E402

from MedGANLogic.adapt import FitBudget, fit_denoise, fit_superres  # noqa: E402
from MedGANLogic.adapt.starts import start_folder  # noqa: E402
from MedGANLogic.evaluation.baselines import bspline_upsample  # noqa: E402
from MedGANLogic.evaluation.metrics import psnr  # noqa: E402
from MedGANLogic.simulate import make_subject, superres_pair  # noqa: E402

SR_TARGET_DB = 1.5  # issue 17: at least +1.5 dB over B-spline
SUBJECT = 2003
CPU_BUDGETS = [60.0, 120.0, 300.0]
GPU_BUDGETS = [10.0, 20.0, 40.0]


def data_range(reference: np.ndarray, mask: np.ndarray) -> float:
    lo, hi = np.percentile(reference[mask], [0.5, 99.5])
    return float(hi - lo)


def phantom(slices: int | None):
    """(noisy T2w at SNR 8, noise-free T2w, head mask), cut to ``slices`` axial slices around the middle."""
    noisy = make_subject(SUBJECT, spacing_mm=2.0, contrasts=("T2w",), snr=8.0, n_lesions=0)
    clean = make_subject(SUBJECT, spacing_mm=2.0, contrasts=("T2w",), snr=1e6, n_lesions=0).volumes["T2w"]
    n = clean.shape[0]
    keep = slice(None) if not slices else slice(max(0, n // 2 - slices // 2), max(0, n // 2 - slices // 2) + slices)

    def cut(volume):
        return volume.with_array(np.ascontiguousarray(volume.array[keep]))

    return cut(noisy.volumes["T2w"]), cut(clean), noisy.head_mask[keep]


def row(task: str, budget: float, result, voxels_out: int, value: float, baseline: str, base_db: float) -> dict:
    rec = result.record
    return {"task": task, "budget s": f"{budget:g}", "steps": rec.steps, "steps/s": f"{rec.steps / rec.seconds:.2f}",
            "pass s/Mvoxel": f"{rec.details['apply_seconds'] / (voxels_out / 1e6):.1f}", "PSNR dB": f"{value:.2f}",
            "baseline": baseline, "baseline dB": f"{base_db:.2f}", "gain dB": f"{value - base_db:+.2f}",
            "_psnr": value, "_gain": value - base_db, "_budget": budget}


def superres_rows(clean, head, budgets, device, factor) -> list[dict]:
    low, grid = superres_pair(clean, (factor, 1, 1), "thick_slices")
    mask = head[: grid.shape[0]]
    rng = data_range(grid.array, mask)
    base = psnr(bspline_upsample(low, grid), grid.array, mask, rng)
    rows = []
    for budget in budgets:
        result = fit_superres(low, factor, budget=FitBudget(seconds=budget, max_steps=10 ** 6), device=device,
                              init=None)
        value = psnr(result.volume.array, grid.array, mask, rng)
        rows.append(row(f"SR x{factor}", budget, result, grid.array.size, value, "cubic B-spline", base))
    return rows


def denoise_rows(noisy, clean, head, budgets, device) -> list[dict]:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    rng = data_range(clean.array, head)
    noisy_db = psnr(noisy.array, clean.array, head, rng)
    sigma = float(estimate_sigma(noisy.array, channel_axis=None))
    nlm = np.stack([denoise_nl_means(s, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)
                    for s in noisy.array.astype(np.float64)])
    nlm_db = psnr(nlm, clean.array, head, rng)
    rows = []
    for budget in budgets:
        result = fit_denoise(noisy, "MR", budget=FitBudget(seconds=budget, max_steps=10 ** 6), device=device,
                             init=start_folder("MR"))
        value = psnr(result.volume.array, clean.array, head, rng)
        r = row("denoise MR", budget, result, noisy.array.size, value, "noisy input", noisy_db)
        r["_nlm"] = nlm_db
        rows.append(r)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """PSNR against the budget, one panel per task, the baselines as dashed lines (Pillow, no plotting library)."""
    from PIL import Image, ImageDraw

    tasks = sorted({r["task"] for r in rows})
    w, h, pad, top = 420, 300, 50, 30
    image = Image.new("RGB", (w * len(tasks), h), "white")
    draw = ImageDraw.Draw(image)
    for i, task in enumerate(tasks):
        mine = [r for r in rows if r["task"] == task]
        lines = [(float(mine[0]["baseline dB"]), mine[0]["baseline"], (128, 128, 128))]
        if "_nlm" in mine[0]:
            lines.append((mine[0]["_nlm"], "non-local means", (230, 120, 0)))
        values = [r["_psnr"] for r in mine] + [v for v, _, _ in lines]
        lo, hi = min(values) - 0.5, max(values) + 0.5
        x0, x1 = i * w + pad, (i + 1) * w - 20
        budgets = [r["_budget"] for r in mine]

        def xy(budget: float, db: float, x0=x0, x1=x1, budgets=budgets, lo=lo, hi=hi) -> tuple[float, float]:
            span = max(budgets) - min(budgets) or 1.0
            return (x0 + (x1 - x0) * (budget - min(budgets)) / span, h - pad - (h - pad - top) * (db - lo) / (hi - lo))

        draw.rectangle([x0, top, x1, h - pad], outline="black")
        draw.text((x0, 8), f"{task}: PSNR (dB) against the fitting budget (s)", fill="black")
        for value, label, colour in lines:
            y = xy(min(budgets), value)[1]
            for x in range(int(x0), int(x1), 8):
                draw.line([x, y, min(x + 4, x1), y], fill=colour)
            draw.text((x0 + 4, y - 12), f"{label} {value:.2f}", fill=colour)
        points = [xy(r["_budget"], r["_psnr"]) for r in mine]
        draw.line(points, fill=(0, 90, 200), width=2)
        for (x, y), r in zip(points, mine):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(0, 90, 200))
            draw.text((x - 10, y + 6), f"{r['_psnr']:.2f}", fill=(0, 90, 200))
            draw.text((x - 8, h - pad + 6), f"{r['_budget']:g}", fill="black")
        draw.text((x0, h - 20), f"{lo:.1f}-{hi:.1f} dB; blue: fitted to the scan", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--budgets", type=float, nargs="*", default=None,
                        help="seconds (default 60 120 300 on a CPU; 10 20 40 on a GPU, where a fit takes "
                             "its steps many times faster)")
    parser.add_argument("--factor", type=int, default=2, help="through-plane factor of the SR case (default 2)")
    parser.add_argument("--slices", type=int, default=None, help="axial slices of the phantom (default: all)")
    args, device = parse(parser, quick={"budgets": [3.0, 6.0], "slices": 12})
    budgets = args.budgets or (GPU_BUDGETS if device.type == "cuda" else CPU_BUDGETS)
    load_before = os.getloadavg()[1]  # the budgets are wall seconds: a busy machine fits fewer steps in them
    noisy, clean, head = phantom(args.slices)
    sr = superres_rows(clean, head, budgets, device, args.factor)
    dn = denoise_rows(noisy, clean, head, budgets, device)
    rows = sr + dn
    png = out_dir() / "adapt.png"
    plot(rows, png)
    last_sr, last_dn = sr[-1], dn[-1]
    targets = [
        target(f"adapt SR x{args.factor}: PSNR >= B-spline + {SR_TARGET_DB} dB after {budgets[-1]:g} s",
               last_sr["gain dB"] + " dB", last_sr["_gain"] >= SR_TARGET_DB,
               "" if last_sr["_gain"] >= SR_TARGET_DB else "budget-limited on this device: see the curve"),
        target(f"adapt denoise MR: PSNR above the noisy input after {budgets[-1]:g} s", last_dn["gain dB"] + " dB",
               last_dn["_gain"] > 0),
        target(f"adapt denoise MR: PSNR above untuned non-local means after {budgets[-1]:g} s",
               f"{last_dn['_psnr']:.2f} vs {last_dn['_nlm']:.2f} dB", last_dn["_psnr"] > last_dn["_nlm"],
               "" if last_dn["_psnr"] > last_dn["_nlm"] else "budget-limited on this device: see the curve"),
    ]
    columns = ["task", "budget s", "steps", "steps/s", "pass s/Mvoxel", "PSNR dB", "baseline", "baseline dB",
               "gain dB"]
    md = "\n".join([
        f"Device: {device_name(device)}. Phantom subject {SUBJECT}, 2 mm, {clean.shape} (z, y, x) voxels"
        f"{' (--quick)' if args.quick else ''}; each budget is its own fit (seed 0; super-resolution from scratch, "
        f"denoising from the shipped MR fit start). Non-local means "
        f"on the noisy input: {dn[0]['_nlm']:.2f} dB (untuned). Load average (5 min) {load_before:.1f} before and "
        f"{os.getloadavg()[1]:.1f} after, on {os.cpu_count()} cores: steps/s is what this process got.", "",
        table(rows, columns), "", f"Curve: `{png.name}`.", ""])
    print(md)
    path = save("adapt", {"rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
                          "markdown": md, "targets": targets})
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
