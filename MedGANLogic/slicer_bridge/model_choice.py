"""Which models fit a volume node, and why the others do not: input checks (modality, voxel size, field of view),
the model the panel proposes, and importing a model from the panel. No MRML here: these work on Volumes and cards.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError, ModalityMismatchError
from ..volume import Volume


class UnsuitableInputError(InputError):
    """The volume does not suit the chosen model (modality, voxel size or field of view); ``force=True`` runs
    anyway. The panel answers it with a "Run anyway?" question; other input errors are just reported."""


class UnsuitableModalityError(UnsuitableInputError, ModalityMismatchError):
    """:class:`UnsuitableInputError` whose problems include the modality or contrast."""

# --- input checks --------------------------------------------------------------------------------------------------
def check_input(volume: Volume, card: Any, slice_axis: int | None = None) -> list[str]:
    """Problems of this volume for this model, as sentences; empty when it suits the model.

    Checks the modality/contrast (as ``MedGANLogic.run`` does) and, when the card declares them,
    ``input.spacing_mm: [min, max]`` (every voxel size, mm) and ``input.fov_mm: [min, max]`` (the field of view
    along every axis the model sees in full: the in-plane axes of a 2D model, all axes of a 3D model).
    ``slice_axis`` overrides the card's for 2D models (array axis: 0 = z).
    """
    from ..pipeline import _modality_problem

    problems = []
    axis = card.slice_axis if slice_axis is None else int(slice_axis)
    modality = _modality_problem(card, volume)
    if modality:
        problems.append(modality)
    spec = card.input
    spacing_range = spec.get("spacing_mm")
    if spacing_range:
        lo, hi = float(spacing_range[0]), float(spacing_range[1])
        bad = [f"{axis} {s:.2f} mm" for axis, s in zip("xyz", volume.spacing) if not lo <= s <= hi]
        if card.dims != "3d":  # the slice axis of a 2d model may be coarser: only in-plane spacing matters
            sliced = "zyx"[axis]
            bad = [b for b in bad if not b.startswith(sliced)]
        if bad:
            problems.append(f"voxel size {', '.join(bad)} is outside the {lo:g}-{hi:g} mm model {card.id} was "
                            f"trained on; resample the volume (Resample Scalar Volume module) or pick another model")
    fov_range = spec.get("fov_mm")
    if fov_range:
        lo, hi = float(fov_range[0]), float(fov_range[1])
        extent = volume.physical_extent()
        axes = [0, 1, 2] if card.dims == "3d" else [a for a in range(3) if a != 2 - axis]
        small = [f"{'xyz'[a]} {extent[a]:.0f} mm" for a in axes if extent[a] < lo]
        large = [f"{'xyz'[a]} {extent[a]:.0f} mm" for a in axes if extent[a] > hi]
        if small:
            problems.append(f"field of view {', '.join(small)} is smaller than the {lo:g}-{hi:g} mm model {card.id} "
                            f"expects (a partial scan?); load the whole scan or pick another model")
        if large:
            problems.append(f"field of view {', '.join(large)} is larger than the {lo:g}-{hi:g} mm model {card.id} "
                            f"expects; crop the volume (Crop Volume module) or pick another model")
    return problems



def models_for(task: str, volume: Volume | None = None) -> list[tuple[Any, str | None]]:
    """Installed models for ``task`` as ``(card, problem)``, those that fit ``volume`` first (problem None).

    ``problem`` says why a model does not fit the volume (e.g. "model mr-to-ct expects MR input but the volume
    is CT"); the panel lists such models only with "run anyway".
    """
    from ..models import registry
    from ..pipeline import _modality_problem

    entries = []
    for card in registry.list_models(task):
        problem = None
        if volume is not None:
            problems = check_input(volume, card)
            problem = "; ".join(problems) if problems else _modality_problem(card, volume)
        entries.append((card, problem))
    return sorted(entries, key=lambda entry: entry[1] is not None)



def proposed_model(entries: list[tuple[Any, str | None]], current: str | None = None) -> str:
    """The model the panel selects among :func:`models_for`'s ``entries``: ``current`` while it is listed, else
    the first that fits the input, else the first listed (shown as "does not fit": Apply then asks to run
    anyway); "" when no model is installed for the task."""
    ids = [card.id for card, _ in entries]
    if current in ids:
        return str(current)
    fitting = [card.id for card, problem in entries if problem is None]
    return fitting[0] if fitting else (ids[0] if ids else "")


def model_is_2d(model: str) -> bool:
    """Whether the installed model ``model`` (id or folder) works slice by slice (then a slice axis applies);
    False for a 3D model or one that cannot be found."""
    from ..errors import MedGANError
    from ..models import registry

    try:
        return registry.get_model(model).dims != "3d"
    except MedGANError:
        return False


def import_model(source: str | Any, *, replace: bool = False, **pix2pix_options: Any) -> Any:
    """Validate a model and add it to the user model folder; returns its card ("Import model..." in the panel).

    ``source`` is a MedGAN model folder (card.json + weights.safetensors: SHA-256 checked, network built, then
    copied) or a pytorch-CycleGAN-and-pix2pix generator checkpoint (.pth; ``pix2pix_options`` as
    :func:`MedGANLogic.train.importer.import_pix2pix` takes them: model_id, task, input_modality, ...).
    """
    from pathlib import Path

    from ..models import registry

    path = Path(source)
    if path.is_dir():
        from ..models.card import load_card

        # Checked here too: install_model's network check may be answered from the loaded-network cache, which
        # is keyed by the card's SHA-256 and so cannot see a changed file.
        registry.verify_weights(load_card(path))
        return registry.install_model(path, replace=replace)
    if path.is_file() and path.suffix.lower() in (".pth", ".pt"):
        from ..train.importer import import_pix2pix

        model_id = pix2pix_options.pop("model_id", None)
        if not model_id:
            raise InputError("Importing a .pth checkpoint needs an id for the new model (model_id), e.g. my-t1-to-t2.")
        target = registry.user_models_dir()
        if (target / model_id).exists() and not replace:
            raise InputError(f"A model {model_id!r} is already installed in {target}; choose another id or replace it.")
        card = import_pix2pix(path, target, model_id=model_id, **pix2pix_options)
        registry.load_network(card, "cpu")  # proves it loads before the panel lists it
        return card
    raise InputError(f"{path} is neither a model folder (card.json + weights.safetensors) nor a .pth generator "
                     f"checkpoint of pytorch-CycleGAN-and-pix2pix.")

