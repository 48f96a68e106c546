"""The bundled sample data (``Resources/SampleData/``): one held-out subject, made bit-for-bit from its seed.

Files (NRRD, gzip; MR and CT rounded to integers to keep the folder small): T1w, T2w and FLAIR with lesions, the
lesion mask, the pseudo-CT, a 25 %-dose CT (projection-domain simulation, slice by slice) and a thick-slice T2w
(2 slices averaged: 4 mm axial), plus ``manifest.json`` naming each file's modality and contrast and
``LICENSE-MNI152.txt``, the notice of the template all of it derives from.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..io import write_volume
from ..volume import Volume
from .lowdose import low_dose_volume
from .lowres import thick_slices
from .subjects import SPLITS, make_subject

SAMPLE_SEED = SPLITS["test"][0]
SAMPLE_SPACING_MM = 2.0
SAMPLE_DOSE = 0.25

MNI_NOTICE = """Data in this folder are derived from the MNI ICBM152 non-linear symmetric 2009a template
(as shipped inside the nilearn Python package), by MedGAN's phantom simulator (MedGANLogic/simulate).
They are simulated images, not images of any person.

Template: Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average age-appropriate
atlases for pediatric studies. NeuroImage 54(1), 2011. Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL.
Unbiased nonlinear average age-appropriate brain templates from birth to adulthood. NeuroImage 47, S102, 2009.
Collins DL, Zijdenbos AP, Baare WFC, Evans AC. ANIMAL+INSECT: improved cortical structure segmentation. IPMI 1999.

Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute,
McGill University. Permission to use, copy, modify, and distribute this software and its documentation for any
purpose and without fee is hereby granted, provided that the above copyright notice appear in all copies. The
authors and McGill University make no representations about the suitability of this software for any purpose.
It is provided "as is" without express or implied warranty. The authors are not responsible for any data loss,
equipment damage, property loss, or injury to subjects or patients resulting from the use or misuse of this
software package.
"""


def _rounded(volume: Volume, dtype=np.int16) -> Volume:
    return volume.with_array(np.round(volume.array).astype(dtype))


def sample_volumes(seed: int = SAMPLE_SEED) -> list[tuple[dict[str, Any], Volume]]:
    """(manifest entry, volume) for every sample file."""
    subject = make_subject(seed, spacing_mm=SAMPLE_SPACING_MM)
    v = subject.volumes
    low, _ = low_dose_volume(v["CT"], SAMPLE_DOSE, seed=seed)
    thick = thick_slices(v["T2w"], 2, axis=0)
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
    ]
    for entry, _ in items:
        entry["file"] = f"sample_{entry['name']}.nrrd"
        entry["subject_seed"] = seed
    return items


def write_sample_data(folder: str | Path, seed: int = SAMPLE_SEED) -> list[Path]:
    """Write the sample data into ``folder`` (all files, or none if anything fails)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = sample_volumes(seed)
    stage = Path(tempfile.mkdtemp(prefix=".sample-", dir=folder))
    try:
        for entry, vol in items:
            write_volume(vol, stage / entry["file"])
        manifest = {"description": f"MedGAN sample: phantom subject {seed} (test split), "
                                   f"{SAMPLE_SPACING_MM:g} mm; made by `medgan simulate --sample-data`.",
                    "subject_seed": seed, "spacing_mm": SAMPLE_SPACING_MM,
                    "files": [entry for entry, _ in items]}
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (stage / "LICENSE-MNI152.txt").write_text(MNI_NOTICE)
        written = []
        for f in sorted(stage.iterdir()):
            target = folder / f.name
            shutil.move(str(f), target)
            written.append(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return written
