"""The bundled sample data (``Resources/SampleData/``): one held-out subject, made bit-for-bit from its seed.

Files (NRRD, gzip; MR and CT rounded to integers to keep the folder small): T1w, T2w and FLAIR with lesions, the
lesion mask, the pseudo-CT, a 25 %-dose CT (projection-domain simulation, slice by slice) and a thick-slice T2w
(2 slices averaged: 4 mm axial) and an in-plane low-resolution T2w (central half of k-space along y and x: 4 mm
in-plane, 2 mm slices), plus ``manifest.json`` naming each file's modality and contrast and
``LICENSE-MNI152.txt``, the notice of the template all of it derives from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import write_volume
from ..volume import Volume
from .lowdose import low_dose_volume
from .lowres import superres_pair
from .subjects import SPLITS, make_subject
from .tissue import LICENCE_FILE, MNI_NOTICE

SAMPLE_SEED = SPLITS["test"][0]
SAMPLE_SPACING_MM = 2.0
SAMPLE_DOSE = 0.25


def _rounded(volume: Volume, dtype=np.int16) -> Volume:
    return volume.with_array(np.round(volume.array).astype(dtype))


def sample_volumes(seed: int = SAMPLE_SEED) -> list[tuple[dict[str, Any], Volume]]:
    """(manifest entry, volume) for every sample file."""
    subject = make_subject(seed, spacing_mm=SAMPLE_SPACING_MM)
    v = subject.volumes
    low, _ = low_dose_volume(v["CT"], SAMPLE_DOSE, seed=seed)
    thick, _ = superres_pair(v["T2w"], (2, 1, 1), "thick_slices")  # as the SR models are trained and evaluated
    coarse, _ = superres_pair(v["T2w"], (1, 2, 2), "kspace_truncate")
    items = [
        ({"name": "T1w", "modality": "MR", "contrast": "T1w"}, _rounded(v["T1w"])),
        ({"name": "T2w", "modality": "MR", "contrast": "T2w"}, _rounded(v["T2w"])),
        ({"name": "FLAIR", "modality": "MR", "contrast": "FLAIR"}, _rounded(v["FLAIR"])),
        ({"name": "lesion_mask", "modality": "mask", "kind": "labels", "labels": {"1": "lesion"}},
         v["lesion_mask"]),
        ({"name": "CT", "modality": "CT", "units": "HU"}, _rounded(v["CT"])),
        ({"name": "CT_lowdose_25", "modality": "CT", "units": "HU", "dose_fraction": SAMPLE_DOSE,
          "description": "25% dose, projection-domain simulation"}, _rounded(low)),
        ({"name": "T2w_thick", "modality": "MR", "contrast": "T2w",
          "description": "thick slices: 2 axial slices averaged (4 mm)"}, _rounded(thick)),
        ({"name": "T2w_lowres_inplane", "modality": "MR", "contrast": "T2w",
          "description": "in-plane low resolution: central half of k-space along y and x (4 mm in-plane)"},
         _rounded(coarse)),
    ]
    for entry, _ in items:
        entry["file"] = f"sample_{entry['name']}.nrrd"
        entry["subject_seed"] = seed
    return items


def write_staged(folder: str | Path, write: Callable[[Path], list[Path]]) -> list[Path]:
    """All or nothing: ``write(stage)`` fills a hidden staging folder, whose files then move into ``folder``.

    A new ``folder`` is the staging folder renamed; an existing one receives the files one by one (replacing
    files of the same name). The template's licence notice is added. If ``write`` fails, nothing is left.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; give a folder.")
    if not folder.parent.exists():
        raise InputError(f"The folder {folder.parent} does not exist; create it or choose another output folder.")
    exists = folder.is_dir()
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.simulate-", dir=folder if exists else folder.parent))
    try:
        names = [p.name for p in write(stage)]
        (stage / LICENCE_FILE).write_text(MNI_NOTICE)
        names.append(LICENCE_FILE)
        if exists:
            for name in names:
                os.replace(stage / name, folder / name)
        else:
            os.rename(stage, folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [folder / name for name in names]


def write_sample_data(folder: str | Path, seed: int = SAMPLE_SEED) -> list[Path]:
    """Write the sample data into ``folder`` (all files, or none if anything fails); returns the paths."""
    items = sample_volumes(seed)

    def write(stage: Path) -> list[Path]:
        paths = [write_volume(vol, stage / entry["file"]) for entry, vol in items]
        manifest = {"description": f"MedGAN sample: phantom subject {seed} (test split), "
                                   f"{SAMPLE_SPACING_MM:g} mm; made by `medgan simulate --sample-data`.",
                    "subject_seed": seed, "spacing_mm": SAMPLE_SPACING_MM, "licence": LICENCE_FILE,
                    "files": [entry for entry, _ in items]}
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return paths + [stage / "manifest.json"]

    return write_staged(folder, write)
