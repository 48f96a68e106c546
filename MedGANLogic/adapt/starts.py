"""Starting points for the denoising fit: blind-spot denoisers fitted in advance to many simulated scans.

A fit to one scan has a budget of a minute or two; from random weights the blind-spot network is still far from
converged when it ends (``make eval``: 300 steps leave MR 1.5 dB below where 1000 steps get). The networks here
ran the same self-supervised fit (:func:`~MedGANLogic.adapt.fit_denoise`: same architecture, blind radius and
loss; no clean image used) on a stack of simulated scans of one modality, with the noise level and the rest of
the acquisition randomised, so a fit to the user's scan starts from a network that already knows what noise and
anatomy look like and only has to adapt to this scan. ``MedGANLogic.run("denoise", ..., adapt=True)`` starts
from the one of the scan's modality when it is installed (``Resources/FitStarts/<modality>``), else from
scratch; the fit's record says which (``init``).

They are model folders like a kept fit (``scan_fitted2d`` cards, ``extras.role = "fit-start"``) but live outside
the model folders: run on their own they are only as good as a generic self-supervised denoiser, and the
constants in their cards (window, noise variance) are those of the training stack, not of any user's scan.

Reproduce them (each a few minutes on two CPU cores)::

    python -m MedGANLogic.adapt.starts --modality MR PT US --output Resources/FitStarts

Training stacks (seeded; the phantom's training split only, never its validation or test subjects):

* MR: domain-randomised heads (:class:`~MedGANLogic.simulate.randomize.DomainRandomizer`, task ``denoise``: any
  contrast ordering, tissue means, bias, resolution, slice plane, motion, field of view, Rician SNR 3-60).
* CT: domain-randomised low-dose CT (the same generator: noise simulated in the projection domain, dose and pixel
  size randomised; phantom anatomy only, so the folder is the same with or without the real-image cache). Not
  shipped: on the real tuning CT of ``make eval-real`` (lung2) a fit from it scored below a fit from scratch
  (25.7 against 26.0 dB at 300 steps, blind radius 1): the simulated projection-domain noise is nearly white at
  the phantom's 1.5 mm pixels, real CT noise is not. ``--modality CT`` still makes one for those who want it.
  CT's default fit is recorrupted-to-recorrupted and fine-tunes the trained ``ldct-denoise`` where it is
  installed (:data:`.denoise.TRAINED_START`).
* PT: phantom subjects' PET (:func:`~MedGANLogic.simulate.pet.simulate_pet`) with counts per SUV 1-20, scanner
  resolution 4-7 mm and post-filter 0-6 mm drawn per subject. PET's default fit is now recorrupted-to-recorrupted
  (:mod:`.denoise`), which starts from scratch, so ``run(..., adapt=True)`` no longer uses it; it starts a PET fit
  with ``method="blindspot"`` (``fit_denoise(..., method="blindspot", init=start_folder("PT"))``).
* US: phantom subjects' speckle (:func:`~MedGANLogic.simulate.ultrasound.simulate_ultrasound`) with the
  speckle grain (PSF width) drawn per subject.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..volume import Volume
from .noise import canonical_modality

START_STEPS = 1500
SHIPPED = ("MR", "PT", "US")  # modalities with a start in Resources/FitStarts (CT: see above)
START_LR = 1e-3  # the shipped starts were fitted at this rate (a fit to a scan then uses its modality's own)
FIT_START_DIR = Path(__file__).resolve().parents[2] / "Resources" / "FitStarts"
SLICES_PER_SCAN = 16  # axial slices kept from each simulated scan (its middle)


def start_folder(modality: str, root: Path | None = None) -> Path | None:
    """The installed starting point for a ``modality`` denoising fit, or None (the fit then starts from scratch)."""
    folder = (root or FIT_START_DIR) / canonical_modality(modality)
    return folder if (folder / "card.json").is_file() and (folder / "weights.safetensors").is_file() else None


def _middle(array: np.ndarray, count: int) -> np.ndarray:
    start = max(0, array.shape[0] // 2 - count // 2)
    return np.asarray(array[start:start + count], dtype=np.float32)


def _fit_to(arrays: list[np.ndarray], fill: str) -> np.ndarray:
    """Stack slabs of different in-plane sizes on the largest one (padded with each slab's edge or minimum)."""
    h = max(a.shape[1] for a in arrays)
    w = max(a.shape[2] for a in arrays)
    out = []
    for a in arrays:
        pad = ((0, 0), (0, h - a.shape[1]), (0, w - a.shape[2]))
        out.append(np.pad(a, pad, mode="edge") if fill == "edge" else np.pad(a, pad, constant_values=a.min()))
    return np.concatenate(out)


def _scalars(meta: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The numbers and words of a sample's (nested) metadata, flattened: what was drawn, for the card."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str)):
            out[f"{prefix}{key}"] = value
    return out


def training_stack(modality: str, scans: int, seed: int = 0) -> tuple[Volume, list[dict[str, Any]]]:
    """A stack of ``SLICES_PER_SCAN`` axial slices of each of ``scans`` simulated noisy scans of ``modality``, and
    what was drawn for each. Slices are 2D samples for the fit: the stack's slice axis is given a larger spacing
    so the fit slices along it."""
    mod = canonical_modality(modality)
    rng = np.random.default_rng(seed)
    slabs, drawn = [], []
    if mod in ("MR", "CT"):
        from ..simulate.randomize import DomainRandomizer

        generator = DomainRandomizer(seed, None, shape=(48, 144, 120), spacing_mm=1.5)
        options = ({"modality": "MR", "ordering": "any"} if mod == "MR"
                   else {"modality": "CT", "real_ct": False, "slices": SLICES_PER_SCAN})
        for i in range(scans):
            sample = generator.sample("denoise", i, **options)
            array = np.asarray(sample["input"].array, np.float32)
            if mod == "MR":  # scans differ in scale: bring each to a 99.5th percentile of 1000
                array *= np.float32(1000.0 / max(float(np.percentile(array, 99.5)), 1e-6))
            slabs.append(_middle(array, SLICES_PER_SCAN))
            drawn.append({"sample": i, **{k: v for k, v in _scalars(sample.get("meta", {})).items()
                                          if k.startswith(("acquisition.", "ct.", "appearance.ordering"))}})
    else:
        from ..simulate import make_subject
        from ..simulate.pet import simulate_pet
        from ..simulate.ultrasound import simulate_ultrasound
        from ..train.data.sources import split_seeds

        for k, subject_seed in enumerate(split_seeds("train", scans)):
            subject = make_subject(subject_seed, spacing_mm=2.0, contrasts=("T2w",), snr=1e6, n_lesions=0)
            keep = slice(subject.tissues.shape[1] // 2 - SLICES_PER_SCAN // 2,
                         subject.tissues.shape[1] // 2 + SLICES_PER_SCAN // 2)
            tissues = np.ascontiguousarray(subject.tissues[:, keep])
            grid = subject.volumes["T2w"].with_array(np.ascontiguousarray(subject.volumes["T2w"].array[keep]))
            if mod == "PT":
                params = {"counts_per_suv": float(np.exp(rng.uniform(np.log(1.0), np.log(20.0)))),
                          "psf_fwhm_mm": float(rng.uniform(4.0, 7.0)), "postfilter_fwhm_mm": float(rng.uniform(0, 6))}
                noisy, _ = simulate_pet(tissues, grid, seed=seed * 1000 + k, **params)
            else:
                params = {"psf_sigma_voxels": tuple(float(v) for v in rng.uniform(0.6, 1.4, size=3))}
                noisy, _ = simulate_ultrasound(tissues, grid, seed=seed * 1000 + k, **params)
            slabs.append(np.asarray(noisy.array, np.float32))
            drawn.append({"subject": int(subject_seed), **params})
    stack = _fit_to(slabs, "min" if mod in ("MR", "US", "PT") else "edge")
    volume = Volume(stack, spacing=(1.5, 1.5, 3.0), metadata={"modality": mod, "name": f"{mod} fit-start stack"})
    return volume, drawn


def train_start(modality: str, output: Path, *, steps: int = START_STEPS, scans: int = 12, seed: int = 0,
                progress: Any = None) -> Path:
    """Fit the ``modality`` starting point on :func:`training_stack` and write it to ``output/<modality>``."""
    from .denoise import fit_denoise
    from .export import save_fitted_model
    from .loop import FitBudget

    mod = canonical_modality(modality)
    started = time.perf_counter()
    stack, drawn = training_stack(mod, scans, seed)
    made = time.perf_counter() - started
    result = fit_denoise(stack, mod, budget=FitBudget(seconds=1e9, max_steps=steps), seed=seed, progress=progress,
                         lr=START_LR)
    folder = Path(output) / mod
    card = dict(result.card)
    card.update({
        "id": f"fit-start-{mod.lower()}", "version": "1.0.0",
        "name": f"{mod} starting point for fitting a denoiser to a scan (blind-spot, self-supervised)",
        "training_data": (f"self-supervised (no clean images) on {len(drawn)} simulated noisy {mod} scans, "
                          f"{SLICES_PER_SCAN} axial slices each (MedGANLogic.adapt.starts.training_stack, seed "
                          f"{seed}); anatomy from the MNI ICBM152 2009a template (Copyright (C) 1993-2009 Louis "
                          f"Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill "
                          f"University; see the template's licence notice)"),
        "license": "Apache-2.0 (weights); training data derived from MNI ICBM152 2009a under its licence notice",
        "intended_use": "the starting weights of a fit to a scan (adapt=True); not a denoiser on its own, not for "
                        "diagnosis",
    })
    card["extras"] = {"role": "fit-start", "modality": mod, "fit": result.record.summary(), "scans": drawn,
                      "seconds_making_data": round(made, 1)}
    result.card = card
    save_fitted_model(result, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedGANLogic.adapt.starts", description=__doc__.split("\n")[0])
    parser.add_argument("--modality", nargs="+", default=list(SHIPPED), help="MR, PT, US (shipped) or CT")
    parser.add_argument("--output", type=Path, default=FIT_START_DIR)
    parser.add_argument("--steps", type=int, default=START_STEPS)
    parser.add_argument("--scans", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for modality in args.modality:
        t = time.perf_counter()
        folder = train_start(modality, args.output, steps=args.steps, scans=args.scans, seed=args.seed)
        card = json.loads((folder / "card.json").read_text())
        fit = card["extras"]["fit"]
        print(f"{modality}: {folder} ({fit['steps']} steps, loss {fit['loss_first']:.4g} -> {fit['loss_last']:.4g}, "
              f"{time.perf_counter() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
