"""``make eval``: the shipped models against simple baselines on the phantom's held-out test subjects.

    python -m MedGANLogic.evaluation --report Testing/Reports [--subjects N] [--sections a,b] [--device cpu]

writes ``evaluation.md`` (tables, targets met or missed, and why), ``evaluation.json`` (every number) and PNG
panels (input | output | target | |error|, the baseline below). An unknown section name is one line on stderr,
exit status 2, and nothing written.

What is where:

* ``metrics.py``: PSNR, SSIM, MAE, Dice, HD95, AUROC, average precision; one copy each, computed by MONAI.
* ``baselines.py``: the simple methods the models must beat (histogram matching, tissue classes, non-local
  means, cubic B-spline, robust z-scores).
* ``context.py``: :class:`~.context.EvalContext` (test subjects, running a model as a user would, in fp32),
  :class:`~.context.SectionResult`, :class:`~.context.Target`.
* ``panels.py``: the PNG panels. ``report.py``: runs the sections, writes the report.
* ``sections/``: one module per model family; each registers its sections in ``sections.SECTIONS`` (a
  :class:`MedGANLogic.registry.Registry`), and the report lists them in that order.
* ``make eval-real`` (the shipped models on real images from public packages): ``real_data.py`` fetches and loads
  the images (cache ``.cache/real/``), ``real_masks.py`` makes rough tissue masks, ``real.py`` is its context and
  report (``python -m MedGANLogic.evaluation.real``), ``real_ldct.py`` and ``real_mr.py`` its sections, registered
  in ``real.REAL_SECTIONS`` (its own registry: they take a ``RealContext``, not the phantom's ``EvalContext``).

Adding a section: write a module (under ``sections/``, or beside this file) with a function
``(ctx: EvalContext) -> SectionResult`` decorated ``@SECTIONS.register("section-name")``, and add the module to
the ``modules`` tuple of ``SECTIONS`` in ``sections/__init__.py`` (relative to that package, e.g. ``".lesion"``
or ``"..real"``); its place in the tuple is its place in the report. A section whose model is not installed
returns :func:`~.context.missing_models`'s result instead of failing. Put metrics in ``metrics.py`` and
baselines in ``baselines.py``, not in the section.

What it may import: the engine's public modules (``pipeline``, ``volume``, ``io``, ``models.registry``,
``normalization``, ``simulate``, ``train.data`` for the phantom subjects, ``train.fanogan`` for its threshold
rule), NumPy, SciPy, torch, MONAI, scikit-image, SimpleITK and Pillow; never Slicer, Qt, CTK or VTK. Nothing in
the engine imports this package (``metrics.py``, which needs only NumPy, torch and MONAI, may be used by
training code), and it is not bundled into the Slicer module (``MedGANExtension/CMakeLists.txt`` leaves it
out). This file imports nothing, so importing ``MedGANLogic.evaluation.metrics`` stays light.
"""
