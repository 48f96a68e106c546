"""The bundled phantom subject (``Resources/SampleData``) in Slicer's Sample Data module, and what each of its
volumes is (modality, contrast) from the folder's manifest."""

from __future__ import annotations

import pathlib
from typing import Any


def register_sample_data(folder: str | pathlib.Path, icon: str) -> None:
    """Add every volume of ``folder`` to the Sample Data module, category "MedGAN".

    Only file names are read here, so Slicer's start-up imports neither PyTorch nor the engine. Local files
    (file:// URIs): nothing is downloaded, so no checksum is needed. Masks load as segmentations.
    """
    import SampleData

    folder = pathlib.Path(folder)
    volumes = sorted(p for p in folder.glob("*") if p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")))
    for path in volumes:
        stem = path.name.split(".")[0]
        name = f"MedGAN {stem[len('sample_'):] if stem.startswith('sample_') else stem}"
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="MedGAN", sampleName=name, thumbnailFileName=icon, uris=path.as_uri(), fileNames=path.name,
            nodeNames=name, loadFileType="SegmentationFile" if "mask" in stem else "VolumeFile")


def declared_modality(node: Any, folder: str | pathlib.Path) -> dict[str, str]:
    """{"modality", "contrast"} of a volume loaded from the sample data in ``folder``, from its manifest, when the
    node does not record them itself (empty otherwise). Passed to the runs, never written to the node."""
    if node is None or node.GetAttribute("MedGAN.modality"):
        return {}
    from MedGANLogic.demo import load_manifest

    for entry in load_manifest(pathlib.Path(folder)):
        if node.GetName() in (f"MedGAN {entry['name']}", entry["name"]):
            return {key: str(entry[key]) for key in ("modality", "contrast") if entry.get(key)}
    return {}
