"""Training data: volumes -> normalised 2D slices -> deterministic batches. No networks, no losses.

Sources (``data.source`` in the config; :mod:`.sources`):
  * ``phantom``: subjects of :mod:`MedGANLogic.simulate` (train / validation seeds of its ``SPLITS``);
    ``data.input`` / ``data.target`` name ``Subject.volumes`` keys ("T1w", "T2w", "CT", ...), and
    ``data.low_dose`` makes the input a simulated low-dose reconstruction of the CT.
  * ``folders``: your own volumes (NIfTI, NRRD, MHA/MHD files or DICOM series folders). Paired training
    (pix2pix, ldct) matches ``data.source_dir`` and ``data.target_dir`` by file name (``sub-01.nii.gz`` with
    ``sub-01.nii.gz`` or ``sub-01.nrrd``); unpaired training (cyclegan) takes any files of each folder.
    ``data.val_fraction`` holds the last volumes out for the sample grids.
  * ``synthetic``: random shapes and a known transform of them, for tests and smoke runs.

Every volume is normalised whole, with the model card's normalisation (:func:`normalize_for_training`, which is
:func:`MedGANLogic.normalization.normalize`), exactly as the inference engine will normalise it, then cut into
slices along ``data.slice_axis`` (with ``context_slices`` neighbours as channels for 2.5d cards, or
``data.context_slices`` of them where a trainer makes its own slabs from more thin slices): :mod:`.slices`.
Super-resolution pairs simulate the low-resolution input from each high-resolution volume with
:func:`MedGANLogic.simulate.superres_pair` (``data.degrade``), the degradation evaluation uses too:
:mod:`.superres`.

Batches are a pure function of (seed, step, sub-step, rank): which slices (an epoch-wise permutation of a
stream of sample numbers, so each epoch sees every slice once and DDP ranks see different slices) and how they
are augmented (left-right flip, placement in the padded canvas). Nothing depends on the history of the run,
which is what makes ``--resume`` bit-exact and lets every rank draw its own batches without communication.

May import numpy, torch, the engine's ``normalization``, ``io`` and ``volume``, and :mod:`MedGANLogic.simulate`.
"""

from .slices import (
    Batch,
    SampleStream,
    SliceBatches,
    SliceSet,
    auto_window,
    build_batches,
    build_slice_sets,
    card_context,
    data_context,
    normalize_for_training,
    place,
    range_low,
    volume_slices,
)
from .sources import (
    DOSE_KEYS,
    VolumeSet,
    cache_dir,
    cached_arrays,
    folder_volumes,
    list_cases,
    load_volumes,
    phantom_subject_arrays,
    phantom_volumes,
    split_seeds,
    synthetic_volumes,
)
from .superres import ScaledPairBatches, build_sr_batches, plane_scale

__all__ = ["Batch", "SampleStream", "SliceBatches", "SliceSet", "auto_window", "build_batches", "build_slice_sets",
           "card_context", "data_context", "normalize_for_training", "place", "range_low", "volume_slices",
           "DOSE_KEYS", "VolumeSet", "cache_dir", "cached_arrays", "folder_volumes", "list_cases", "load_volumes",
           "phantom_subject_arrays", "phantom_volumes", "split_seeds", "synthetic_volumes", "ScaledPairBatches",
           "build_sr_batches", "plane_scale"]
