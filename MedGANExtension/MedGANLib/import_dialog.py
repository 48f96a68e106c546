"""The "Import model..." dialogs: choose a model folder or a checkpoint, and say what a pytorch-CycleGAN-and-pix2pix
checkpoint does (it does not record it)."""

from __future__ import annotations

import os

import qt
import slicer


def ask_model_to_import() -> tuple[str, dict] | None:
    """(path, options for ``slicer_bridge.import_model``) of what the user picks: a model folder (through its
    card.json) or a .pth/.pt checkpoint (options asked); None when cancelled."""
    path = qt.QFileDialog.getOpenFileName(
        slicer.util.mainWindow(), "Import model: a model folder's card.json, or a pix2pix/CycleGAN checkpoint",
        "", "MedGAN model card or PyTorch checkpoint (card.json *.pth *.pt)")
    if not path:
        return None
    if path.lower().endswith((".pth", ".pt")):
        options = ask_checkpoint_options(os.path.basename(path))
        return None if options is None else (path, options)
    return (os.path.dirname(path) if os.path.basename(path) == "card.json" else path), {}


def ask_checkpoint_options(file_name: str) -> dict | None:
    """Id, task, modalities and output window of the checkpoint ``file_name``, as ``slicer_bridge.import_model``
    takes them; None when the user cancels."""
    dialog = qt.QDialog(slicer.util.mainWindow())
    dialog.setWindowTitle(f"Import {file_name}")
    form = qt.QFormLayout(dialog)
    model_id = qt.QLineEdit(os.path.splitext(file_name)[0].lower().replace("_", "-"))
    task = qt.QComboBox()
    task.addItems(["synthesize", "denoise"])
    input_modality, output_modality = qt.QComboBox(), qt.QComboBox()
    input_modality.addItems(["MR", "CT"])
    output_modality.addItems(["MR", "CT"])
    input_contrast, output_contrast = qt.QLineEdit("T1w"), qt.QLineEdit("T2w")
    low, high = qt.QDoubleSpinBox(), qt.QDoubleSpinBox()
    for box, value in ((low, 0.0), (high, 1000.0)):
        box.setRange(-5000.0, 50000.0)
        box.value = value
    for label, widget in (("Model id:", model_id), ("Task:", task), ("Input modality:", input_modality),
                          ("Input contrast:", input_contrast), ("Output modality:", output_modality),
                          ("Output contrast:", output_contrast), ("Output window low:", low),
                          ("Output window high:", high)):
        form.addRow(label, widget)
    buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Ok | qt.QDialogButtonBox.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)
    if not dialog.exec_():
        return None
    return {"model_id": model_id.text.strip(), "task": task.currentText,
            "input_modality": input_modality.currentText, "input_contrast": input_contrast.text.strip() or None,
            "output_modality": output_modality.currentText,
            "output_contrast": output_contrast.text.strip() or None, "output_window": [low.value, high.value]}
