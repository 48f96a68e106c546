"""MedGAN engine: generative adversarial networks for medical volumes.

One call runs any task on a file or a :class:`Volume`::

    import MedGANLogic
    result = MedGANLogic.run("synthesize", "t1.nii.gz", model="mr-t1-to-t2")
    MedGANLogic.write_volume(result.volume, "t2_synthetic.nii.gz")

or in two steps, to see every decision and warning before the network runs::

    plan = MedGANLogic.plan("synthesize", "t1.nii.gz")   # reads, checks, chooses; plan.warnings
    result = MedGANLogic.execute(plan)

Importing this package needs neither Slicer nor Qt, and imports nothing heavy: SimpleITK comes with the first
``read_volume``/``write_volume``, torch when a task runs (so that ``medgan --help`` starts at once).
"""

from .errors import CancelledError, InputError, MedGANError, MedGANWarning, ModalityMismatchError, ModelError

__version__ = "0.1.0"

__all__ = ["Volume", "read_volume", "write_volume", "run", "plan", "execute", "RunPlan", "RunResult", "MedGANError",
           "InputError", "ModelError", "ModalityMismatchError", "CancelledError", "MedGANWarning", "__version__"]


_LAZY = {"run": "pipeline", "plan": "pipeline", "execute": "pipeline", "RunPlan": "pipeline",
         "RunResult": "pipeline", "read_volume": "io", "write_volume": "io", "Volume": "volume"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'MedGANLogic' has no attribute {name!r}")
