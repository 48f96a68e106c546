"""What the panel shows in words: the model card as HTML, the device menu's labels. Plain Python (no Qt, no
MRML), so it is tested outside Slicer; torch is imported only to list the GPUs.
"""

from __future__ import annotations

from typing import Any


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

