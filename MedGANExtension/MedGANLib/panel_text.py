"""What the panel shows in words: help text, the model card as HTML, the device menu's labels, the input's
description. Plain Python (no Qt; nodes only through ``slicer_bridge``), so it is tested outside Slicer; torch is
imported only to list the GPUs.
"""

from __future__ import annotations

from typing import Any

#: The module's help (Help & Acknowledgement section of the panel), HTML.
HELP_TEXT = """
Generative adversarial networks for medical volumes: synthesize another contrast (T1w to T2w, MR to CT),
denoise low-dose CT, super-resolve thick-slice scans, map anomalies in colour over the scan, and segment.
Choose an input volume, a task and a model, and press Apply: inference runs in the background (Apply becomes
Cancel), and the results come back as new nodes aligned with the input, with their provenance in the node
attributes (MedGAN.*). <b>Research use only, not for diagnosis.</b>
See the <a href="https://github.com/medgan/MedGAN#3d-slicer">MedGAN documentation</a>.
"""
ACKNOWLEDGEMENT_TEXT = """
MedGAN builds on 3D Slicer's scripted module template, MONAI, PyTorch and the PyTorch extension. The demo models
are trained on phantom data derived from the MNI152 template (shipped with nilearn).
"""


def device_choices() -> list[tuple[str, str]]:
    """``(label, device)`` pairs for the device selector: Auto, CPU, then every CUDA GPU by index and name."""
    choices = [("Auto (GPU if available)", "auto"), ("CPU", "cpu")]
    try:
        import torch
    except ImportError:  # torch not installed yet: it is installed on first use
        return choices
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            choices.append((f"CUDA {index}: {props.name} ({props.total_memory / 2**30:.0f} GB)", f"cuda:{index}"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        choices.append(("Apple GPU (MPS)", "mps"))
    return choices


def card_summary_html(card: Any, problem: str | None = None) -> str:
    """The model card as the panel shows it: what it does, what it was trained on, its intended use."""
    from html import escape

    info = card.summary()
    rows = [("Model", f"{info['name']} ({info['id']} v{info['version']})"),
            ("Does", f"{info['task']}: {info['modality_in'] or 'any'} &rarr; {info['modality_out'] or 'map'}"
                     f" ({info['dims']}{', x' + str(info['scale_factor']) if card.task == 'superres' else ''})"),
            ("Trained on", info["training_data"]), ("Intended use", info["intended_use"]),
            ("License", card.data.get("license", "")), ("Source", f"{info['source']}: {info['folder']}")]
    html = "".join(f"<tr><td><b>{escape(k)}</b>&nbsp;</td><td>{v if k == 'Does' else escape(str(v))}</td></tr>"
                   for k, v in rows)
    warning = (f"<p style='color:#c0392b'><b>Does not fit the input:</b> {escape(problem)}. Tick \"Run even if the "
               f"input does not fit\" to run anyway.</p>" if problem else "")
    return f"<table>{html}</table>{warning}"



def model_label(card: Any, problem: str | None = None) -> str:
    """A model as the model list shows it: name and id, marked when it does not fit the input."""
    return f"{card.name} ({card.id})" + ("" if problem is None else "  [does not fit the input]")


def no_model_html(task_label: str) -> str:
    return f"No {task_label.lower()} model is installed. Use Import model... to add one."


def missing_dependencies_html(missing: list[str]) -> str:
    return (f"MedGAN needs {', '.join(missing)} to list and run models. Press <b>Install dependencies</b> "
            f"below.")


def describe_input(node: Any, **declared: str) -> str:
    """The line under the input selector for a volume node (``declared``: modality/contrast it does not record)."""
    if node is None:
        return "No input volume: load one (File > Add Data, or Sample Data > MedGAN)."
    from MedGANLogic import InputError, slicer_bridge

    try:
        return input_description(slicer_bridge.header_volume(node, **declared))
    except InputError as exc:
        return str(exc)


def input_description(volume: Any) -> str:
    """The line under the input selector: modality (recorded, guessed or unknown), voxels, spacing, field of view.

    ``volume`` is the :class:`~MedGANLogic.volume.Volume` of ``slicer_bridge.header_volume`` (no voxels needed).
    """
    from MedGANLogic.modality import describe_modality  # the engine's one description of a modality

    meta = volume.metadata
    modality = describe_modality(volume)
    spacing = " x ".join(f"{s:.2f}" for s in volume.spacing)
    fov = " x ".join(f"{e:.0f}" for e in volume.physical_extent())
    note = f"; under transform {meta['transform_hardened']}" if "transform_hardened" in meta else ""
    return f"{modality}; {volume.shape[::-1]} voxels of {spacing} mm; field of view {fov} mm{note}"
