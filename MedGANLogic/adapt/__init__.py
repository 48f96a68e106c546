"""Fit to this scan: self-supervised super-resolution and denoising that learn from the scan itself.

No training data and no pretrained model are needed (one can be the starting point), so these work on any
scanner, contrast and body part:

* :func:`fit_superres`: through-plane super-resolution of an anisotropic scan (after SMORE/ECLARE, Remedios et
  al.): the sharp in-plane axes are degraded to the slice profile to make training pairs for a 2D SRResNet,
  which is then applied along the slice axis in two orthogonal planes and fused.
* :func:`fit_denoise`: blind-spot denoising (Noise2Self, Laine et al.'s blind-spot network) in a per-modality
  variance-stabilised domain: MR (Rician), PET (Poisson-like, Anscombe), ultrasound (speckle, log domain), CT
  (correlated FBP noise: a wider blind spot).
* :func:`~.inplane.fit_inplane`: in-plane super-resolution (after ZSSR/MZSR): the trained in-plane model fine-tuned on
  the scan's own pairs (the scan degraded once more as the model was trained to invert, and the scan), then run as
  the trained model runs; ``MedGANLogic.run("superres", ..., adapt=True)`` picks it for a scan without thick slices.
* :func:`save_fitted_model`: the fitted network as a model folder whose card says which scan it was fitted on.

Every fit runs within a :class:`FitBudget` (seconds and steps), reports ``progress(fraction, message)``, stops
within a step when ``cancel`` is set (raising :class:`~MedGANLogic.errors.CancelledError`), is seeded, and
returns an :class:`AdaptResult`: the output :class:`~MedGANLogic.volume.Volume` and a :class:`FitRecord` for
provenance.

Modules, one job each: ``loop`` (budget, progress, cancel, record), ``data`` (unit range, patches), ``noise``
(noise models), ``adversarial`` (the optional GAN term), ``denoise``, ``superres``, ``inplane``, ``result``
(result type, initial weights, application), ``export`` (model folders); the networks are architectures in
:mod:`MedGANLogic.models` (``blindspot``, ``adapted``), so a saved fit runs through the engine like any model.
May import: numpy, scipy, torch, MONAI and the engine below the pipeline (volume, errors, inference, models,
normalization, simulate, train's data and loss building blocks); never the pipeline at import time (it imports
this package), Slicer or Qt.
"""

from .denoise import fit_denoise
from .export import save_fitted_model
from .loop import FitBudget, FitRecord
from .noise import MODALITIES
from .result import AdaptResult
from .superres import fit_superres

__all__ = ["fit_denoise", "fit_superres", "save_fitted_model", "FitBudget", "FitRecord", "AdaptResult",
           "MODALITIES"]
