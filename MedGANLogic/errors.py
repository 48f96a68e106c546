"""Exceptions with messages a radiologist can act on: each names the problem and the fix."""


class MedGANError(Exception):
    """Base class: every error MedGAN raises on purpose. The CLI prints its message on one line."""


class InputError(MedGANError, ValueError):
    """The input volume or file is unsuitable (missing, 2D, 4D, vector, empty, constant, NaN...)."""


class ModelError(MedGANError):
    """A model card is invalid, a model id is unknown, or weights fail their SHA-256 check."""


class ModalityMismatchError(InputError):
    """The model expects another modality/contrast than the volume has; pass force=True to run anyway."""


class CancelledError(MedGANError):
    """The run was cancelled by the user; nothing was written."""


class MedGANWarning(UserWarning):
    """Something the user should know about a run that still goes ahead (a voxel size or field of view outside
    what the model was trained on, a run forced despite a modality mismatch). The CLI prints it as
    ``warning: ...`` on stderr; :func:`MedGANLogic.run` emits it with :func:`warnings.warn`."""
