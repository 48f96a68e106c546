"""The body of the module's self-test ("Reload and Test"): the real module on the bundled sample data.

Each function takes the running ``ScriptedLoadableModuleTest`` (for its asserts and ``delayDisplay``) and uses the
built-in models (Resources/Models) on the CPU: every task through the module logic, the input never modified,
cancel leaving nothing, and the panel running in the background.
"""

from __future__ import annotations

import pathlib
import threading
import time
from typing import Any

import slicer
import vtk


def load_sample(case: Any, card: Any, sample_folder: str) -> Any:
    """Load the sample volume that fits ``card`` as "MedGAN <name>"; its modality must be declared by the
    manifest."""
    from MedGANLib.sample_data import declared_modality
    from MedGANLogic.demo import load_manifest, pick_sample

    entries = load_manifest(pathlib.Path(sample_folder))
    case.assertTrue(entries, "Resources/SampleData/manifest.json is missing: the extension package is incomplete")
    entry = pick_sample(card, entries)
    case.assertIsNotNone(entry, f"no sample volume fits model {card.id}")
    node = slicer.util.loadVolume(str(entry["path"]), {"name": f"MedGAN {entry['name']}"})
    case.assertEqual(declared_modality(node, sample_folder).get("modality"), entry.get("modality"))
    return node


def load_lesion_mask(sample_folder: str) -> Any:
    """The sample lesion mask as a label map node (the lesion task's mask)."""
    from MedGANLogic.demo import load_manifest

    entry = next(e for e in load_manifest(pathlib.Path(sample_folder)) if e["name"] == "lesion_mask")
    return slicer.util.loadLabelVolume(str(entry["path"]), {"name": "MedGAN lesion mask"})


def builtin_model(case: Any, task: str) -> Any:
    """The first built-in model for ``task``."""
    from MedGANLogic.models import registry

    cards = [c for c in registry.list_models(task) if c.source == "builtin"]
    case.assertTrue(cards, f"no built-in {task} model in Resources/Models: the extension package is incomplete")
    return cards[0]


def ijk_to_ras(node: Any) -> list[float]:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return [m.GetElement(r, c) for r in range(4) for c in range(4)]


def every_task(case: Any, logic: Any, tasks: tuple[str, ...], sample_folder: str) -> None:
    """Each task with its built-in model on the sample volume that fits it: outputs, geometry, provenance."""
    case.delayDisplay("Running every task on the sample data")
    case.assertTrue(logic.ensureDependencies(askConfirmation=False))
    for task in tasks:
        card = builtin_model(case, task)
        node = load_sample(case, card, sample_folder)
        before = slicer.util.arrayFromVolume(node).copy()
        fractions = []
        extra = {"mask": load_lesion_mask(sample_folder), "lesion_type": "tumour"} if task == "lesion" else {}
        nodes = logic.process(node, task, model=card.id, device="cpu",
                              progress=lambda f, m, record=fractions.append: record(f), make_segmentation=True,
                              **extra)
        case.assertTrue(nodes, f"{task}: no output node")
        out = nodes[0]
        case.assertEqual(out.GetAttribute("MedGAN.model"), card.id)
        case.assertEqual(out.GetAttribute("MedGAN.synthetic"), "true")
        case.assertEqual(len(out.GetAttribute("MedGAN.sha256")), 64)
        case.assertEqual(fractions[-1], 1.0)
        case.assertTrue((slicer.util.arrayFromVolume(node) == before).all(), f"{task}: input modified")
        if task == "segment":
            case.assertTrue(out.IsA("vtkMRMLSegmentationNode"))
            case.assertGreater(out.GetSegmentation().GetNumberOfSegments(), 0)
        elif task == "superres":
            spacing_in, spacing_out = node.GetSpacing(), out.GetSpacing()
            case.assertTrue(all(o <= i + 1e-6 for i, o in zip(spacing_in, spacing_out)))
            case.assertTrue(any(o < i - 1e-6 for i, o in zip(spacing_in, spacing_out)))
        else:
            case.assertEqual(ijk_to_ras(out), ijk_to_ras(node), f"{task}: geometry differs from the input")
        if task == "lesion":  # the volume with the lesion, and the lesion as a segmentation
            case.assertTrue(nodes[1].IsA("vtkMRMLSegmentationNode"))
            case.assertEqual(nodes[1].GetSegmentation().GetNumberOfSegments(), 1)
        if task == "anomaly":
            composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
            case.assertEqual(composite.GetForegroundVolumeID(), out.GetID())
            case.assertIsNotNone(out.GetAttribute("MedGAN.case_score"))
        case.delayDisplay(f"{task}: {out.GetName()}")


def overwrite_is_refused(case: Any, logic: Any, sample_folder: str) -> None:
    """The input cannot be the output node."""
    from MedGANLogic import InputError

    card = builtin_model(case, "synthesize")
    node = load_sample(case, card, sample_folder)
    with case.assertRaises(InputError):
        logic.process(node, "synthesize", model=card.id, device="cpu", outputNode=node)


def cancel_leaves_nothing(case: Any, logic: Any, sample_folder: str) -> None:
    """A cancelled run adds no node."""
    from MedGANLogic import CancelledError

    card = builtin_model(case, "synthesize")
    node = load_sample(case, card, sample_folder)
    count = slicer.mrmlScene.GetNumberOfNodes()
    stop = threading.Event()
    stop.set()
    with case.assertRaises(CancelledError):
        logic.process(node, "synthesize", model=card.id, device="cpu", cancel=stop)
    case.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)


def panel_runs_in_the_background(case: Any, task_value: Any, sample_folder: str) -> None:
    """Apply turns into Cancel; cancelling adds nothing; a full run keeps the GUI responsive and adds one node.

    ``task_value``: the parameter node's Task enum member for "synthesize".
    """
    card = builtin_model(case, "synthesize")
    node = load_sample(case, card, sample_folder)
    slicer.util.selectModule("MedGAN")
    widget = slicer.modules.MedGANWidget
    p = widget.logic.getParameterNode()
    p.inputVolume = node
    p.task = task_value
    p.modelId = card.id
    p.device = "cpu"
    p.batchSize = 1
    # cancel: Apply, then Apply again (now Cancel) -> nothing added
    count = slicer.mrmlScene.GetNumberOfNodes()
    widget.onApplyButton()
    case.assertEqual(widget.ui.applyButton.text, "Cancel")
    widget.onApplyButton()
    deadline = time.time() + 120
    while widget._job is not None and time.time() < deadline:
        slicer.app.processEvents()
        time.sleep(0.05)
    case.assertIsNone(widget._job)
    case.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
    # a full run: the GUI keeps processing events while the worker runs, then the node appears
    widget.onApplyButton()
    ticks = 0
    while widget._job is not None and time.time() < deadline + 240:
        slicer.app.processEvents()
        ticks += 1
        time.sleep(0.05)
    case.assertGreater(ticks, 0)
    case.assertEqual(widget.ui.applyButton.text, "Apply")
    outputs = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
               if n.GetAttribute("MedGAN.model") == card.id]
    case.assertEqual(len(outputs), 1)
    case.delayDisplay("Test passed")
