"""Which models fit a volume, and why the others do not (the plan step's checks: ``MedGANLogic.modality`` and
``MedGANLogic.fit``), the model the panel proposes, and importing a model from the panel. No MRML here: these work
on Volumes and cards.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError, ModalityMismatchError
from ..modality import modality_problem
from ..volume import Volume


class UnsuitableInputError(InputError):
    """The volume does not suit the chosen model (modality, voxel size, field of view or slice plane);
    ``force=True`` runs anyway. The panel answers it with a "Run anyway?" question; other input errors are just
    reported."""


class UnsuitableModalityError(UnsuitableInputError, ModalityMismatchError):
    """:class:`UnsuitableInputError` whose problems include the modality or contrast."""


def models_for(task: str, volume: Volume | None = None) -> list[tuple[Any, str | None]]:
    """Installed models for ``task`` as ``(card, problem)``, those that fit ``volume`` first (problem None).

    ``problem`` says why a model does not fit the volume (e.g. "model mr-to-ct expects MR input but the volume
    is CT"); the panel lists such models only with "run anyway".
    """
    from ..frame import remaining_problems
    from ..models import registry

    entries = []
    for card in registry.list_models(task):
        problem = None
        if volume is not None:  # the plan step's checks: modality/contrast, then what the model's frame leaves
            problems = [p for p in (modality_problem(card, volume), *remaining_problems(volume, card)) if p]
            problem = "; ".join(problems) or None
        entries.append((card, problem))
    return sorted(entries, key=lambda entry: entry[1] is not None)



def models_for_node(task: str, node: Any, **declared: str) -> list[tuple[Any, str | None]]:
    """:func:`models_for` a volume node (its header: no voxels copied; ``declared`` modality/contrast as
    ``header_volume`` takes them); every model without a problem when there is no usable node."""
    from .nodes import header_volume

    try:
        volume = header_volume(node, **declared)
    except InputError:  # no node, or no voxels
        volume = None
    return models_for(task, volume)


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
    :func:`MedGANLogic.models.importer.import_pix2pix` takes them: model_id, task, input_modality, ...).
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
        from ..models.importer import import_pix2pix

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

