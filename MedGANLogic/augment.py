"""``medgan augment``: image/label pairs with synthetic lesions, for training segmenters on few labelled scans.

    medgan augment --images DIR [--labels DIR] --count N --output DIR [--seed 0] [--lesion-type wmh ...]

Pair ``i`` (0 .. N-1) takes image ``i mod n`` of ``--images`` (sorted by name), draws a lesion type (from
``--lesion-type``, all three by default) and a plausible mask where that type occurs (location priors from the
image's own intensities, :func:`MedGANLogic.simulate.lesions.priors_from_image`; away from lesions the label map
already has), and runs the lesion task (:mod:`MedGANLogic.tasks.lesion`). Everything is drawn from
``default_rng([seed, i])``: the same seed gives the same pairs, another seed others. Written: ``images/`` and
``labels/`` (``<name>_aug<i>`` in the input's format; the label map is the input's labels, if given, with the
inserted lesion set to ``--lesion-label``) and ``manifest.json`` (what was drawn for each pair).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .lesion_types import LESION_TYPES
from .volume import Volume


def augmented_pair(image: Volume, labels: Volume | None, rng: np.random.Generator, *,
                   lesion_types: tuple[str, ...] = LESION_TYPES, lesion_label: int = 1, model: str | None = None,
                   device: str = "auto") -> tuple[Volume, Volume, dict[str, Any]]:
    """(image with a synthetic lesion, its label map, what was drawn) for one draw of ``rng``."""
    from .pipeline import run
    from .simulate.lesions import priors_from_image, random_lesion_mask

    lesion_type = lesion_types[int(rng.integers(len(lesion_types)))]
    priors = priors_from_image(image)
    existing = _labels_on(labels, image) if labels is not None else None
    if existing is not None:  # a new lesion goes where nothing is labelled yet
        priors.brain &= existing == 0
        priors.white_matter &= existing == 0
    lesion, drawn = random_lesion_mask(lesion_type, priors, rng)
    mask = image.with_array((lesion > 0).astype(np.uint8), metadata={"kind": "labels", "modality": "mask"})
    result = run("lesion", image, model=model, device=device, mask=mask, lesion_type=lesion_type)
    label = np.zeros(image.shape, np.uint8) if existing is None else existing.astype(np.uint8)
    label[lesion > 0] = lesion_label
    drawn = dict(drawn, seconds=result.provenance["seconds"], model=result.provenance["model"])
    return result.volume, result.outputs["mask"].with_array(label), drawn


def _labels_on(labels: Volume, image: Volume) -> np.ndarray:
    """A label map's values on ``image``'s grid (nearest neighbour when the grids differ)."""
    from .masks import same_grid
    from .resampling import grid_of, resample

    if same_grid(labels, image):
        return np.asarray(labels.array)
    return resample(labels, grid_of(image), "nearest", background=0)


def augment(images: str | Path, count: int, output: str | Path, *, labels: str | Path | None = None, seed: int = 0,
            lesion_types: tuple[str, ...] = LESION_TYPES, lesion_label: int = 1, model: str | None = None,
            device: str = "auto", progress=None) -> list[dict[str, Any]]:
    """Write ``count`` augmented pairs to ``output`` (see the module docstring); returns the manifest entries."""
    from .io import file_suffix, read_volume, write_volumes
    from .train.data.sources import list_cases

    if count < 1:
        raise InputError(f"--count must be at least 1; got {count}.")
    for t in lesion_types:
        if t not in LESION_TYPES:
            raise InputError(f"Unknown lesion type {t!r}; choose from {', '.join(LESION_TYPES)}.")
    cases = list_cases(images)
    if not cases:
        raise InputError(f"No images in {images} (NIfTI, NRRD, MHA/MHD files or DICOM folders).")
    label_cases = list_cases(labels) if labels else {}
    if labels and (missing := sorted(set(cases) - set(label_cases))):
        raise InputError(f"--labels has no label map for {len(missing)} image(s), e.g. {', '.join(missing[:3])}; "
                         f"label maps are matched to images by file name.")
    out = Path(output)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    names = sorted(cases)
    manifest = []
    for i in range(int(count)):
        name = names[i % len(names)]
        rng = np.random.default_rng([int(seed), i])
        image = read_volume(cases[name])
        label_in = read_volume(label_cases[name]) if labels else None
        new_image, new_label, drawn = augmented_pair(image, label_in, rng, lesion_types=lesion_types,
                                                     lesion_label=lesion_label, model=model, device=device)
        suffix = file_suffix(cases[name]) if cases[name].is_file() else ".nii.gz"
        stem = f"{name}_aug{i:04d}{suffix}"
        write_volumes({out / "images" / stem: new_image, out / "labels" / stem: new_label},
                      sources=[cases[name]] + ([label_cases[name]] if labels else []))
        manifest.append({"index": i, "image": f"images/{stem}", "label": f"labels/{stem}", "source": name,
                         "seed": [int(seed), i], **drawn})
        if progress:
            progress((i + 1) / count, f"{i + 1}/{count} pairs")
    (out / "manifest.json").write_text(json.dumps({"seed": int(seed), "pairs": manifest}, indent=2) + "\n")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="folder of images (NIfTI, NRRD, MHA, DICOM folders)")
    parser.add_argument("--labels", help="folder of their label maps, matched by file name (optional)")
    parser.add_argument("--count", type=int, required=True, help="number of augmented pairs to write")
    parser.add_argument("--output", required=True, help="folder for images/, labels/ and manifest.json")
    parser.add_argument("--seed", type=int, default=0, help="seed (the same seed gives the same pairs)")
    parser.add_argument("--lesion-type", dest="lesion_types", action="append", choices=list(LESION_TYPES),
                        help="lesion types to draw from (repeatable; default all)")
    parser.add_argument("--lesion-label", type=int, default=1, help="label value of the inserted lesions")
    parser.add_argument("--model", help="lesion model id or folder (default: the installed one)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no summary line")


def main(args: argparse.Namespace) -> int:
    manifest = augment(args.images, args.count, args.output, labels=args.labels, seed=args.seed,
                       lesion_types=tuple(args.lesion_types or LESION_TYPES), lesion_label=args.lesion_label,
                       model=args.model, device=args.device)
    if not args.quiet:
        kinds = {t: sum(m["type"] == t for m in manifest) for t in LESION_TYPES}
        print(f"wrote {len(manifest)} pairs to {args.output}: " + ", ".join(f"{k}={v}" for k, v in kinds.items()))
    return 0
