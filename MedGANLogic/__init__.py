"""MedGAN engine: generative adversarial networks for medical volumes.

One call runs any task on a file or a :class:`Volume`::

    import MedGANLogic
    result = MedGANLogic.run("synthesize", "t1.nii.gz", model="mr-t1-to-t2")
    MedGANLogic.write_volume(result.volume, "t2_synthetic.nii.gz")

or in two steps, to see every decision and warning before the network runs::

    plan = MedGANLogic.plan("synthesize", "t1.nii.gz")   # reads, checks, chooses; plan.warnings
    result = MedGANLogic.execute(plan)

Importing this package needs neither Slicer nor Qt; torch is imported when a task runs.
"""

from .errors import CancelledError, InputError, MedGANError, MedGANWarning, ModalityMismatchError, ModelError
from .io import read_volume, write_volume
from .volume import Volume

__version__ = "0.1.0"

__all__ = ["Volume", "read_volume", "write_volume", "run", "plan", "execute", "RunPlan", "RunResult", "MedGANError",
           "InputError", "ModelError", "ModalityMismatchError", "CancelledError", "MedGANWarning", "__version__"]


def __getattr__(name: str):
    if name in ("run", "plan", "execute", "RunPlan", "RunResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'MedGANLogic' has no attribute {name!r}")
