"""A picture of domain-randomised samples: ``python -m MedGANLogic.simulate.randomize --png OUT.png``.

One column per sample (T1w->T2w, any->T2w twice, MR->CT, MR denoising, CT denoising, super-resolution,
anomaly, brain extraction of a head with a face: :mod:`.face`, and anomaly on a contrast-enhanced T1w: :mod:`.vessels`);
top row the input, bottom row the target, each an axial slice through the middle of the target grid, for the face
through the eyes, for the contrast-enhanced head a little above the middle, through the deep veins (inputs on their own
grids are drawn at their physical aspect). The caption says what was drawn. The committed picture was drawn with an
empty real-data cache (``MEDGAN_REAL_DATA=/tmp/empty``): with the real CT slices cached, the CT column shows one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .montage import _grey, _picture
from .randomize import DomainRandomizer, DomainRanges
from .tissue import CSF

SAMPLES = (
    ("T1w -> T2w", "synthesize", {"source": "T1w", "target": "T2w"}),
    ("any -> T2w", "synthesize", {"source": "any", "target": "T2w"}),
    ("any -> T2w", "synthesize", {"source": "any", "target": "T2w"}),
    ("MR -> CT", "synthesize", {"source": "any", "target": "CT"}),
    ("MR denoise", "denoise", {"modality": "MR"}),
    ("CT denoise", "denoise", {"modality": "CT", "slices": 1}),
    ("super-res", "superres", {}),
    ("anomaly", "anomaly", {}),
)
# drawn each with its own DomainRanges (axial slices): a face at the level of the eyes; contrast enhancement (clearly
# seen: SNR 20-60, the whole head) a little above the middle
FACE = ("brain mask, face", "brainmask", {}, {"face": 1.0})
CONTRAST = ("anomaly, Gd T1w", "anomaly", {"ordering": "T1w"}, {"enhancement": 1.0, "snr": (20.0, 60.0),
                                                                   "partial_fov": 0.0})


def _axial(volume, z_mm: float) -> tuple[np.ndarray, float, float]:
    """The axial slice of ``volume`` nearest ``z_mm`` from its first slice's edge, and its (row, col) mm."""
    sx, sy, sz = volume.spacing
    k = int(np.clip(z_mm // sz, 0, volume.shape[0] - 1))
    return volume.array[k], sy, sx


def _window(a: np.ndarray, ct: bool, bone: bool) -> tuple[float, float]:
    if ct:
        return (-200.0, 1500.0) if bone else (-20.0, 100.0)
    positive = a[a > 0]
    return 0.0, float(np.percentile(positive, 99.5)) if positive.size else 1.0


def _caption(name: str, sample: dict) -> str:
    meta = sample["meta"]
    acq = meta.get("acquisition") or {}
    if "ct" in meta:
        ct = meta["ct"]
        return f"{name}\n{ct['dose_fraction'] * 100:.0f}% dose {ct['pixel_mm']:.2f} mm"
    if "superres" in meta:
        sr = meta["superres"]
        return f"{name} {meta['appearance']['ordering']}\n{sr['degrade']} {sr['scale']} SNR {sr['snr']:.0f}"
    spacing = "x".join(f"{s:.1f}" for s in acq.get("spacing_mm", []))
    motion = " motion" if acq.get("motion") else ""
    return f"{name} ({meta['appearance']['ordering']})\n{spacing} mm {acq.get('profile')} SNR {acq['snr']:.0f}{motion}"


def make_figure(path: str | Path = "Testing/Reports/randomized_samples.png", seed: int = 15,
                shape: tuple[int, int, int] = (80, 112, 96), spacing_mm: float = 2.0) -> Path:
    """Draw one input/target pair per :data:`SAMPLES` (seed ``seed``, sample ``i`` for column ``i``) into ``path``."""
    generator = DomainRandomizer(seed, shape=shape, spacing_mm=spacing_mm)
    columns = []
    for i, (name, task, options, *special) in enumerate((*SAMPLES, FACE, CONTRAST)):
        ranges = DomainRanges(**special[0], slice_axes=(0,)) if special else None
        sample = (DomainRandomizer(seed, ranges, shape=shape, spacing_mm=spacing_mm) if special else generator
                  ).sample(task, i, **options)
        z_mm = shape[0] * spacing_mm / 2
        if name == FACE[0]:  # the slice with the most eye (CSF outside the brain mask)
            eyes = (sample["labels"].array == CSF) & (sample["target"].array == 0)
            z_mm = (int(np.argmax(eyes.reshape(eyes.shape[0], -1).sum(1))) + 0.5) * spacing_mm
        elif name == CONTRAST[0]:  # through the deep veins and the choroid plexus, above the middle
            z_mm = shape[0] * spacing_mm * 0.58
        pictures = []
        for role in ("input", "target"):
            vol = sample[role]
            ct = vol.metadata.get("modality") == "CT"
            a, row_mm, col_mm = _axial(vol, z_mm if vol.shape[0] > 1 else 0.0)
            lo, hi = _window(a, ct, bone=ct and task == "synthesize")
            picture = _picture(_grey(a, lo, hi), row_mm, col_mm)
            pictures.append(picture.resize((picture.width * 3 // 5, picture.height * 3 // 5)))  # 1.1 mm/px
        columns.append((_caption(name, sample), pictures))
    pad, label = 6, 30
    w = max(p.width for _, ps in columns for p in ps)
    h = max(p.height for _, ps in columns for p in ps)
    canvas = Image.new("RGB", (len(columns) * (w + pad) + pad + 50, 2 * (h + pad) + label + 24), (15, 15, 15))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), f"Domain-randomised samples (seed {seed}; MedGANLogic.simulate.randomize), from the MNI "
                        "ICBM152 2009a template; not images of a person. Top: input, bottom: physical target.",
              fill=(235, 235, 235))
    for n, (caption, pictures) in enumerate(columns):
        x = pad + 50 + n * (w + pad)
        draw.text((x, 20), caption, fill=(235, 235, 235))
        for r, img in enumerate(pictures):
            canvas.paste(img, (x + (w - img.width) // 2, 24 + label + r * (h + pad) + (h - img.height) // 2))
    for r, role in enumerate(("input", "target")):
        draw.text((pad, 24 + label + r * (h + pad) + h // 2), role, fill=(235, 235, 235))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.convert("L").save(path, optimize=True)  # grey levels only: a third of the bytes
    return path
