"""The MedGAN module's own library (Slicer's ``<Module>Lib`` convention), beside ``MedGAN.py``.

* :mod:`.panel_text` -- what the panel shows in words: the model card, the device menu, the input description;
  plain Python, no Qt.

The engine (``MedGANLogic``) knows nothing of this package; this package knows nothing of tensors.
"""
