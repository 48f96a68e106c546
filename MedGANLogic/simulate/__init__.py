"""Phantom data made here, from the MNI152 template shipped inside nilearn: MedGAN's training and test data.

* :func:`make_subject`: one subject (T1w, T2w, PD, FLAIR, pseudo-CT, lesion mask) and its lesion-free twin.
* :data:`SPLITS`: subject seeds of the train / val / test splits (never overlapping).
* :func:`simulate_low_dose`, :func:`low_dose_volume`: projection-domain low-dose CT (low-dose, full-dose) pairs.
* :func:`superres_pair` (:data:`SR_DEGRADATIONS`), built on :func:`thick_slices` and :func:`kspace_truncate`:
  low-resolution MR for super-resolution, the one degradation training and evaluation use too.
* :mod:`.datasets`: torch datasets of slices, slabs and patches; :mod:`.sample`: the bundled sample data.
See each module's docstring for the physics and the literature values used.
"""

from .lowdose import low_dose_volume, noiseless_reconstruction, simulate_low_dose
from .lowres import SR_DEGRADATIONS, kspace_truncate, superres_pair, thick_slices
from .mri import CONTRASTS, TISSUE_PARAMS
from .subjects import ALL_CONTRASTS, SPLITS, Subject, make_subject, validate_options
from .tissue import TISSUES

__all__ = ["make_subject", "Subject", "SPLITS", "ALL_CONTRASTS", "CONTRASTS", "TISSUES", "TISSUE_PARAMS",
           "simulate_low_dose", "noiseless_reconstruction", "low_dose_volume",
           "thick_slices", "kspace_truncate", "superres_pair", "SR_DEGRADATIONS", "validate_options"]
