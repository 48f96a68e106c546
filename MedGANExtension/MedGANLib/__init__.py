"""The MedGAN module's own library (Slicer's ``<Module>Lib`` convention), beside ``MedGAN.py``.

* :mod:`.parameters` -- the parameter node (the panel's state), its choice lists, the run options it makes;
* :mod:`.panel_text` -- what the panel shows in words: model card, device menu, input description (no Qt);
* :mod:`.fit_to_scan` -- the "Fit to this scan" checkbox: the tasks offering it, its widgets, its run options;
* :mod:`.job` -- one Apply: a ``slicer_bridge.Batch`` executed on a worker thread the GUI polls (no Qt);
* :mod:`.dependencies` -- PyTorch, MONAI and the rest, checked and installed on first use;
* :mod:`.sample_data` -- the bundled phantom subject in the Sample Data module, and its manifest;
* :mod:`.import_dialog` -- the "Import model..." dialogs;
* :mod:`.self_test` -- the checks of ``MedGANTest`` ("Reload and Test").

May import: the engine (``MedGANLogic``, tensors only through it), and ``slicer``/``qt``/``vtk`` (Slicer only).
The engine knows nothing of this package.
"""
