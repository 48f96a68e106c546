"""MedGAN: generative adversarial networks for medical volumes, in 3D Slicer.

Scripted module, after Slicer's template: ``MedGAN`` (module description), ``MedGANParameterNode`` (typed
parameter node, from MedGANLib.parameters), ``MedGANWidget`` (the panel: binds Resources/UI/MedGAN.ui to the
parameter node, runs inference on a worker thread polled by a QTimer), ``MedGANLogic`` (console API; calls
``MedGANLogic.slicer_bridge``) and ``MedGANTest`` (self-test on the sample data, every task).

The engine package is also called ``MedGANLogic``; it is imported as ``medgan_engine`` so that the template's
``MedGANLogic`` class below does not shadow it. Nothing here touches tensors: the engine does. The module's own
helpers (parameter node, panel text, fit to the scan, dependencies, sample data, background job, the self-test's
checks) are in ``MedGANLib/`` beside this file, after Slicer's ``<Module>Lib`` convention.

Console example::

    logic = slicer.util.getModuleLogic("MedGAN")
    nodes = logic.process(slicer.util.getNode("MRHead"), "synthesize", model="mr-t1-to-t2", device="cpu")
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# The engine lives next to this file in an installed extension; in a source checkout ("Add module path" pointing
# at MedGANExtension/) it is one folder up, beside the shared Resources/.
_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE_ROOT = os.path.dirname(_MODULE_DIR)
if not os.path.isdir(os.path.join(_MODULE_DIR, "MedGANLogic")) and os.path.isdir(
        os.path.join(_SOURCE_ROOT, "MedGANLogic")) and _SOURCE_ROOT not in sys.path:
    sys.path.insert(0, _SOURCE_ROOT)

from MedGANLib import dependencies, fit_to_scan, panel_text, parameters, sample_data, self_test  # noqa: E402  (own library)
from MedGANLib.import_dialog import ask_model_to_import  # noqa: E402
from MedGANLib.job import MedGANJob  # noqa: E402
from MedGANLib.parameters import ENSEMBLE_TASKS, MedGANParameterNode, Task  # noqa: E402

import MedGANLogic as medgan_engine  # noqa: E402  (the engine package; the class MedGANLogic is the module logic)
from MedGANLogic import slicer_bridge  # noqa: E402
from MedGANLogic.tasks import TASKS as TASK_TABLE  # noqa: E402


def resourceFile(relativePath: str) -> str:
    """A file of Resources/: next to the module when installed, or at the source checkout's root."""
    for root in (_MODULE_DIR, _SOURCE_ROOT):
        path = os.path.join(root, "Resources", relativePath)
        if os.path.exists(path):
            return path
    return os.path.join(_MODULE_DIR, "Resources", relativePath)


class MedGAN(ScriptedLoadableModule):
    """Module description: title, category, help, acknowledgement; sample data registered at startup."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedGAN"
        self.parent.categories = ["MedGAN"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedGAN contributors"]
        self.parent.helpText = panel_text.HELP_TEXT
        self.parent.acknowledgementText = panel_text.ACKNOWLEDGEMENT_TEXT
        self.parent.icon = qt.QIcon(resourceFile("Icons/MedGAN.png"))
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the bundled phantom subject (Resources/SampleData) to the Sample Data module (see MedGANLib)."""
    sample_data.register_sample_data(resourceFile("SampleData"), resourceFile("Icons/MedGAN.png"))


class MedGANWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Widgets are bound to the parameter node; Apply starts a MedGANJob and becomes Cancel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job: MedGANJob | None = None
        self._keepFit = False
        self._shownAnomalyMapID = None
        self._updatingModels = False
        self._missingDependencies: list[str] = []
        self._modelListKey = None
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.timeout.connect(self.onPollJob)

    def resourcePath(self, filename: str) -> str:
        return resourceFile(filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedGAN.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedGANLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.selectStudyButton.connect("clicked(bool)", self.onSelectStudy)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.lesionMaskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onLesionMaskChanged)
        # the anomaly maps are told by their attribute (saved with the scene), not by this session's memory
        self.ui.anomalyMapSelector.addAttribute("vtkMRMLScalarVolumeNode", "MedGAN.kind", "anomaly_map")
        self.ui.progressBar.setVisible(False)
        self._missingDependencies = self.logic.missingDependencies()
        self.populateDevices()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel.set()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job.cancel.set()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode
        if not self._parameterNode.anomalyMap:  # e.g. a scene saved before this panel was used: its latest map
            self._parameterNode.anomalyMap = (slicer_bridge.anomaly_map_nodes(slicer.mrmlScene) or [None])[-1]

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.onParameterNodeModified()

    # --- state -> GUI ----------------------------------------------------------------------------------------------
    def onParameterNodeModified(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        self.populateModels()
        self.ui.inputInfoLabel.text = self.logic.describeInput(p.inputVolume)
        self.ui.anomalyCollapsibleButton.enabled = p.task in (Task.ANOMALY, Task.LESION) or p.anomalyMap is not None
        self.ui.lesionCollapsibleButton.enabled = p.task == Task.LESION
        self.ui.thresholdSliderWidget.enabled = not p.useCardThreshold
        self.ui.sliceAxisComboBox.enabled = self.logic.modelIs2D(p.modelId)
        self.ui.ensembleComboBox.enabled = p.task in ENSEMBLE_TASKS and not p.adapt
        fit_to_scan.enable_widgets(self.ui, p.task.value, p.adapt)
        deviceIndex = self.ui.deviceComboBox.findData(p.device)
        if deviceIndex >= 0 and deviceIndex != self.ui.deviceComboBox.currentIndex:
            wasBlocked = self.ui.deviceComboBox.blockSignals(True)
            self.ui.deviceComboBox.currentIndex = deviceIndex
            self.ui.deviceComboBox.blockSignals(wasBlocked)
        if slicer_bridge.is_anomaly_map(p.anomalyMap):  # the selected map; a newly selected one is shown
            shown, self._shownAnomalyMapID = self._shownAnomalyMapID, p.anomalyMap.GetID()
            self.logic.updateAnomalyDisplay(p, show=shown != self._shownAnomalyMapID)
        self.updateApplyButton()

    def updateApplyButton(self) -> None:
        p, button = self._parameterNode, self.ui.applyButton
        if self._job is not None:
            button.text, button.enabled = "Cancel", not self._job.cancel.is_set()
            button.toolTip = "Stop the run; it stops within one batch and leaves nothing behind."
        elif self._missingDependencies:
            button.text, button.enabled = "Install dependencies", True
            button.toolTip = "Install " + ", ".join(self._missingDependencies) + " (first use only)."
        else:
            ready = p is not None and p.inputVolume is not None and (
                (bool(p.modelId) and (p.task != Task.LESION or p.lesionMask is not None))
                or fit_to_scan.fitting(p.task.value, p.adapt))
            button.text, button.enabled = "Apply", ready
            button.toolTip = ("Run the task on the input volume." if ready else
                              "Choose an input volume and a model (Import model... adds one).")

    def populateModels(self) -> None:
        """Fill the model list: models for the task, those fitting the input first, with their card."""
        p = self._parameterNode
        key = (p.task, p.inputVolume.GetID() if p.inputVolume else None, p.modelId, p.useCardThreshold,
               tuple(self._missingDependencies))
        if self._updatingModels or key == self._modelListKey:
            return
        self._modelListKey = key
        self._updatingModels = True
        try:
            combo = self.ui.modelComboBox
            combo.clear()
            if self._missingDependencies:
                self.ui.modelCardBrowser.html = panel_text.missing_dependencies_html(self._missingDependencies)
                return
            entries = self.logic.modelsFor(p.task.value, p.inputVolume)
            for card, problem in entries:
                combo.addItem(panel_text.model_label(card, problem), card.id)
            p.modelId = slicer_bridge.proposed_model(entries, p.modelId)
            ids = [card.id for card, _ in entries]
            if p.modelId:
                combo.currentIndex = ids.index(p.modelId)
            entry = next(((card, problem) for card, problem in entries if card.id == p.modelId), None)
            self.ui.modelCardBrowser.html = (panel_text.card_summary_html(*entry) if entry else
                                             panel_text.no_model_html(p.task.label()))
            if entry and p.useCardThreshold and entry[0].extras.get("threshold") is not None:
                p.threshold = min(2.0, float(entry[0].extras["threshold"]))
        finally:
            self._updatingModels = False

    def populateDevices(self) -> None:
        self.ui.deviceComboBox.clear()
        for label, device in panel_text.device_choices():
            self.ui.deviceComboBox.addItem(label, device)

    # --- GUI -> state (the lists the parameter node cannot bind by itself) ----------------------------------------
    def onModelChanged(self, index: int) -> None:
        if self._updatingModels or self._parameterNode is None or index < 0:
            return
        self._parameterNode.modelId = self.ui.modelComboBox.itemData(index) or ""

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def onLesionMaskChanged(self, node) -> None:
        """The segment list shows the chosen segmentation's segments (a label map has none to choose)."""
        self.ui.lesionSegmentComboBox.clear()
        self.ui.lesionSegmentComboBox.addItems(parameters.segment_names(node))
        self.ui.lesionSegmentComboBox.enabled = self.ui.lesionSegmentComboBox.count > 0

    def onSelectStudy(self) -> None:
        p = self._parameterNode
        if p is None or p.inputVolume is None:
            return
        for node in slicer_bridge.study_volume_nodes(slicer.mrmlScene, p.inputVolume):
            self.ui.batchVolumesSelector.setCheckState(node, qt.Qt.Checked)

    def onImportModel(self) -> None:
        chosen = ask_model_to_import()
        if chosen is None:
            return
        path, options = chosen
        with slicer.util.tryWithErrorDisplay("Could not import the model.", waitCursor=True):
            card = self.logic.importModel(path, **options)
            self._modelListKey = None
            self.ui.statusLabel.text = f"Imported model {card.id} into {card.folder}."
            if card.task == self._parameterNode.task.value:
                self._parameterNode.modelId = card.id
            self.onParameterNodeModified()

    # --- Apply / Cancel --------------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._job is not None:
            self._job.cancel.set()
            self.ui.statusLabel.text = "Cancelling: stopping after the current batch..."
            self.updateApplyButton()
            return
        if self._missingDependencies:
            self.installDependencies()
            return
        p = self._parameterNode
        try:
            inputs = [p.inputVolume]
            if p.batchMode:
                inputs += [node for node in self.ui.batchVolumesSelector.checkedNodes()
                           if node.GetID() != p.inputVolume.GetID()]
            fit = fit_to_scan.fitting(p.task.value, p.adapt)
            batch = self.logic.prepare(inputs, p.task.value, None if fit else p.modelId, p.device, p.outputNode,
                                       runAnyway=lambda reason: slicer.util.confirmYesNoDisplay(
                                           f"{reason}\n\nRun anyway?",
                                           windowTitle="MedGAN: the input does not fit the model"),
                                       **self.logic.optionsFromParameters(
                                           p, self.ui.lesionSegmentComboBox.currentText or None))
        except Exception as exc:
            self.showError(exc, traceback.format_exc())
            return
        self._keepFit = fit and p.keepFit  # as it is at Apply, whatever the box says when the job ends
        self._job = MedGANJob(batch).start()
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = fit_to_scan.status_text(p.task.label(), p.modelId, fit, p.adaptBudget)
        self.updateApplyButton()
        self._timer.start()

    def installDependencies(self) -> None:
        try:
            installed = self.logic.ensureDependencies(askConfirmation=True)
        except Exception as exc:
            self.showError(exc, traceback.format_exc())
            return
        if not installed:
            self.ui.statusLabel.text = ("Not installed: MedGAN cannot run without " +
                                        ", ".join(self._missingDependencies) + ". Press the button again to install "
                                        "them.")
            return
        self._missingDependencies = []
        self._modelListKey = None
        self.populateDevices()
        self.ui.statusLabel.text = "Dependencies installed. Choose a model and press Apply."
        self.onParameterNodeModified()

    def onPollJob(self) -> None:
        """Main thread, every 100 ms: show progress; when the worker is done, make the nodes or report."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        latest = job.latestProgress()
        if latest is not None:
            self.ui.progressBar.value = int(round(100 * latest[0]))
            self.ui.statusLabel.text = latest[1]
        if not job.done.is_set():
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.setVisible(False)
        try:
            if isinstance(job.error, medgan_engine.CancelledError):
                self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
            elif job.error is not None:
                self.showError(job.error, job.trace)
            else:
                nodes, status = self.logic.finish(job)
                kept = fit_to_scan.keep_fits(job.batch, self._keepFit)
                self.ui.statusLabel.text = status + kept
                if kept:  # the model list shows the new model at its next update
                    self._modelListKey = None
                self.showOutputs(nodes)
        except Exception as exc:
            self.showError(exc, traceback.format_exc())
        finally:
            self.updateApplyButton()
            self.onParameterNodeModified()

    def showOutputs(self, nodes: list) -> None:
        """The new anomaly map becomes the one the display controls act on; Show 3D offers the new segmentation."""
        self._shownAnomalyMapID = next((n.GetID() for n in nodes if slicer_bridge.is_anomaly_map(n)), None)
        if self._shownAnomalyMapID:
            self._parameterNode.anomalyMap = slicer.mrmlScene.GetNodeByID(self._shownAnomalyMapID)
        segmentation = next((n for n in nodes if n.IsA("vtkMRMLSegmentationNode")), None)
        if segmentation is not None:
            self.ui.segmentationShow3DButton.setSegmentationNode(segmentation)
            self.ui.segmentationShow3DButton.enabled = True

    def showError(self, exc: BaseException, trace: str) -> None:
        """One clear dialog; the full trace goes to the log (and the dialog's details)."""
        logging.error(trace)
        message = str(exc) if isinstance(exc, medgan_engine.MedGANError) else f"{type(exc).__name__}: {exc}"
        self.ui.statusLabel.text = f"Failed: {message}"
        slicer.util.errorDisplay(message, windowTitle="MedGAN", detailedText=trace)


class MedGANLogic(ScriptedLoadableModuleLogic):
    """MedGAN's module logic: everything the panel does, callable from the Python console with nodes.

    The MRML work is in ``MedGANLogic.slicer_bridge`` (tested outside Slicer), the module's helpers in
    ``MedGANLib``; this class adds the application's scene, the parameter node and the sample data's manifest.
    """

    def getParameterNode(self):
        return MedGANParameterNode(super().getParameterNode())

    # --- dependencies (MedGANLib.dependencies) --------------------------------------------------------------------
    def missingDependencies(self) -> list[str]:
        return dependencies.missing_dependencies()

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what the engine needs on first use (asks first); False when the user declines."""
        return dependencies.ensure_dependencies(askConfirmation)

    # --- what the panel lists ---------------------------------------------------------------------------------------
    def modelsFor(self, task: str, inputVolume=None) -> list:
        """``(card, problem)`` of the installed models for ``task``, those that fit the input first."""
        return slicer_bridge.models_for_node(task, inputVolume, **self.declaredModality(inputVolume))

    def modelIs2D(self, modelId: str) -> bool:
        return bool(modelId) and not self.missingDependencies() and slicer_bridge.model_is_2d(modelId)

    def describeInput(self, inputVolume) -> str:
        return panel_text.describe_input(inputVolume, **self.declaredModality(inputVolume))

    def declaredModality(self, node) -> dict:
        """{"modality", "contrast"} of a sample-data volume whose node does not record them (see MedGANLib)."""
        if self.missingDependencies():
            return {}
        return sample_data.declared_modality(node, resourceFile("SampleData"))

    def optionsFromParameters(self, p, segment: str | None = None) -> dict:
        """The keyword options of a run as the parameter node ``p`` sets them (``segment``: the lesion mask's)."""
        return parameters.run_options(p, self.modelIs2D(p.modelId), segment)

    def updateAnomalyDisplay(self, p, show: bool = False) -> None:
        """Apply the panel's colour map, opacity and threshold to the selected anomaly map ``p.anomalyMap``;
        ``show``: put it over its input in the slice views."""
        slicer_bridge.update_anomaly_display(p.anomalyMap, slicer.mrmlScene, opacity=p.opacity, show=show,
                                             colormap=p.colormap.value,
                                             display_threshold=None if p.useCardThreshold else p.threshold)

    def importModel(self, path: str, replace: bool = False, **options):
        """Validate a model folder or a pix2pix/CycleGAN .pth checkpoint and add it to the user model folder."""
        self.ensureDependencies(askConfirmation=True)
        return slicer_bridge.import_model(path, replace=replace, **options)

    # --- running: console (synchronous) and panel (worker thread) -------------------------------------------------
    def process(self, inputVolume, task: str, model: str | None = None, device: str = "auto", progress=None,
                cancel=None, outputNode=None, **options) -> list:
        """Run ``task`` on ``inputVolume`` and return the new nodes (console API; blocks until done).

        ``options`` are those of ``slicer_bridge.run_on_node``: batch_size, overlap, slice_axis, force, threshold,
        colormap, opacity, display_threshold, make_segmentation, show, harden_transform.
        """
        self.ensureDependencies(askConfirmation=True)
        options = {**self.declaredModality(inputVolume), **options}
        return slicer_bridge.run_on_node(slicer.mrmlScene, inputVolume, task, model=model or None, device=device,
                                         progress=progress, cancel=cancel, output_node=outputNode, **options)

    def prepare(self, inputVolumes: list, task: str, model: str | None, device: str = "auto", outputNode=None,
                runAnyway=None, **options):
        """Main thread: a ``slicer_bridge.Batch`` for the inputs. ``runAnyway(reason) -> bool`` is asked when an
        input does not suit the model (True runs with force=True); the output node is for a single input only."""
        return slicer_bridge.prepare_batch(slicer.mrmlScene, inputVolumes, task, model=model or None, device=device,
                                           output_node=outputNode, run_anyway=runAnyway,
                                           node_options=self.declaredModality, **options)

    def finish(self, job: MedGANJob) -> tuple[list, str]:
        """Main thread: the nodes of a finished job (all or nothing) and a status line."""
        made = job.batch.finish(slicer.mrmlScene)
        return [node for nodes in made.values() for node in nodes], job.batch.status()


class MedGANTest(ScriptedLoadableModuleTest):
    """Self-test for "Reload and Test": the real module on the bundled sample data, every task.

    Uses the built-in models (Resources/Models) on the CPU; for each task it loads the sample volume that fits
    the model, runs the module logic and checks the new nodes (geometry, provenance, display), then checks that
    the panel runs in the background, can be cancelled, and leaves the scene unchanged when cancelled. The checks
    are in ``MedGANLib.self_test``.
    """

    TASKS = tuple(TASK_TABLE.names())  # every task of the engine's table

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_EveryTask()
        self.setUp()
        self.test_InputIsNeverModifiedAndOverwriteIsRefused()
        self.setUp()
        self.test_CancelLeavesNothing()
        self.setUp()
        self.test_PanelRunsInTheBackground()

    def test_EveryTask(self):
        self_test.every_task(self, MedGANLogic(), self.TASKS, resourceFile("SampleData"))

    def test_InputIsNeverModifiedAndOverwriteIsRefused(self):
        self_test.overwrite_is_refused(self, MedGANLogic(), resourceFile("SampleData"))

    def test_CancelLeavesNothing(self):
        self_test.cancel_leaves_nothing(self, MedGANLogic(), resourceFile("SampleData"))

    def test_PanelRunsInTheBackground(self):
        self_test.panel_runs_in_the_background(self, Task.SYNTHESIZE, resourceFile("SampleData"))
