"""Weight averaging: one model whose weights are the uniform mean of several fine-tunes of the same start.

Fine-tunes of one pretrained network with different data or nuisances often lie in one basin of the loss, and the
mean of their weights can do better than each of them ("model soups", Wortsman et al., ICML 2022). A recipe asks
for it with a top-level ``average`` listing installed models (ids or model folders) instead of training::

    extends: ldct-denoise-base        # the family and the card it exports
    name: ldct-denoise
    average: [ldct-denoise-photos, ldct-denoise-kernels-photos]
    export:
      - card: {id: ldct-denoise, version: 3.3.0, ...}

``medgan train --recipe ldct-denoise --export DIR`` then trains nothing: it checks that every listed model has the
same architecture and was fine-tuned from the same weights (their cards' ``training.init``: networks trained from
different starts need not have matching units, and their mean is no model), averages their weights in float32 and
writes the recipe's card with the averaged weights. The card's ``training`` record names
what was averaged (id, version, weights SHA-256 and each one's own training record). Given ``--init`` or your own
data (``--source-dir``/``--target-dir``: fine-tuning the averaged model on your pairs), the recipe trains instead,
as the recipe it extends does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..errors import InputError


def average_models(config: dict[str, Any], export_dir: str | Path, command: str | None = None) -> list[Any]:
    """Export each ``config["export"]`` card with the mean of the weights of the models ``config["average"]``
    names (see the module). Returns the written :class:`~MedGANLogic.models.card.ModelCard` s."""
    from ..models.registry import get_model, read_weights, save_model

    sources = config.get("average")
    if not isinstance(sources, list) or len(sources) < 2:
        raise InputError(f"Training config: 'average' must list two or more installed models (ids or model "
                         f"folders); got {sources!r}.")
    cards = [get_model(str(s)) for s in sources]
    layout = {(c.architecture, repr(sorted(c.arch_params.items()))) for c in cards}
    if len(layout) > 1:
        raise InputError("Training config: 'average': the models differ in architecture ("
                         + "; ".join(f"{c.id}: {c.architecture} {c.arch_params}" for c in cards)
                         + "); only networks of one architecture can be averaged.")
    starts = [(c.data.get("training") or {}).get("init") for c in cards]
    if not starts[0] or any(s != starts[0] for s in starts):  # networks of other starts: their units need not match
        raise InputError("Training config: 'average': the models must be fine-tunes of one start (their cards' "
                         "training.init); got " + "; ".join(f"{c.id}: {s or 'no recorded start'}"
                                                            for c, s in zip(cards, starts)) + ".")
    states = [read_weights(c) for c in cards]
    mean = {k: sum(s[k].float() for s in states) / len(states) for k in states[0]}
    first = cards[0]
    written = []
    for entry in config.get("export", []):
        card = copy.deepcopy(entry["card"])
        card["architecture"] = {"name": first.architecture, "params": dict(first.arch_params)}
        card.setdefault("slice_axis", first.slice_axis)
        card["training"] = {
            "family": config.get("family"), "run": config.get("name"), "method": "uniform weight average",
            "command": command or f"medgan train --recipe {config.get('name')}",
            "average_of": [{"model": c.id, "version": c.version, "weights_sha256": c.sha256,
                            "training": copy.deepcopy(c.data.get("training"))} for c in cards],
        }
        written.append(save_model(Path(export_dir) / card["id"], card, mean))
    if not written:
        raise InputError("Training config: 'average' needs an 'export' entry (the card to write).")
    return written
