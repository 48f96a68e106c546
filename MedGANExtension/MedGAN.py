"""MedGAN: generative adversarial networks for medical volumes, in 3D Slicer.

Scripted module, after Slicer's template: ``MedGAN`` (module description), ``MedGANParameterNode`` (typed
parameter node), ``MedGANWidget`` (the panel: binds Resources/UI/MedGAN.ui to the parameter node, runs inference on
a worker thread polled by a QTimer), ``MedGANLogic`` (console API; calls ``MedGANLogic.slicer_bridge``) and
``MedGANTest`` (self-test on the sample data, every task).

The engine package is also called ``MedGANLogic``; it is imported as ``medgan_engine`` so that the template's
``MedGANLogic`` class below does not shadow it. Nothing in this file touches tensors: the engine does.

Console example::

    logic = slicer.util.getModuleLogic("MedGAN")
    nodes = logic.process(slicer.util.getNode("MRHead"), "synthesize", model="mr-t1-to-t2", device="cpu")
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import sys
import threading
import traceback
from typing import Annotated, Any, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Decimals, WithinRange, parameterNodeWrapper
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

from MedGANLib import panel_text  # noqa: E402  (the module's own library, beside this file)

import MedGANLogic as medgan_engine  # noqa: E402  (the engine package; the class MedGANLogic is the module logic)
from MedGANLogic import slicer_bridge  # noqa: E402

# Python packages the engine needs at run time that Slicer does not bundle: (import name, pip requirement).
ENGINE_REQUIREMENTS = (("monai", "monai>=1.3"), ("safetensors", "safetensors>=0.4"), ("yaml", "pyyaml>=6"),
                       ("scipy", "scipy>=1.10"))
TORCH_REQUIREMENT = ">=2.1"


def resourceFile(relativePath: str) -> str:
    """A file of Resources/: next to the module when installed, or at the source checkout's root."""
    for root in (_MODULE_DIR, _SOURCE_ROOT):
        path = os.path.join(root, "Resources", relativePath)
        if os.path.exists(path):
            return path
    return os.path.join(_MODULE_DIR, "Resources", relativePath)


#
# MedGAN
#


class MedGAN(ScriptedLoadableModule):
    """Module description: title, category, help, acknowledgement; sample data registered at startup."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedGAN"
        self.parent.categories = ["MedGAN"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedGAN contributors"]
        self.parent.helpText = """
Generative adversarial networks for medical volumes: synthesize another contrast (T1w to T2w, MR to CT),
denoise low-dose CT, super-resolve thick-slice scans, map anomalies in colour over the scan, and segment.
Choose an input volume, a task and a model, and press Apply: inference runs in the background (Apply becomes
Cancel), and the results come back as new nodes aligned with the input, with their provenance in the node
attributes (MedGAN.*). <b>Research use only, not for diagnosis.</b>
See the <a href="https://github.com/medgan/MedGAN#3d-slicer">MedGAN documentation</a>.
"""
        self.parent.acknowledgementText = """
MedGAN builds on 3D Slicer's scripted module template, MONAI, PyTorch and the PyTorch extension. The demo models
are trained on phantom data derived from the MNI152 template (shipped with nilearn).
"""
        self.parent.icon = qt.QIcon(resourceFile("Icons/MedGAN.png"))
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the bundled phantom subject (the volumes in Resources/SampleData) to the Sample Data module.

    Only file names are read here, so Slicer's startup imports neither PyTorch nor the engine; what each volume
    is (modality, contrast) comes from the folder's manifest when MedGAN sees the node
    (``MedGANLogic.declaredModality``).
    """
    import pathlib

    import SampleData

    folder = pathlib.Path(resourceFile("SampleData"))
    icon = resourceFile("Icons/MedGAN.png")
    volumes = sorted(p for p in folder.glob("*") if p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")))
    for path in volumes:
        stem = path.name.split(".")[0]
        name = f"MedGAN {stem[len('sample_'):] if stem.startswith('sample_') else stem}"
        # Local files (file:// URIs): nothing is downloaded, so no checksum is needed. Masks load as segmentations.
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category="MedGAN", sampleName=name, thumbnailFileName=icon, uris=path.as_uri(), fileNames=path.name,
            nodeNames=name, loadFileType="SegmentationFile" if "mask" in stem else "VolumeFile")


#
# MedGANParameterNode
#


class Task(enum.Enum):
    SYNTHESIZE = "synthesize"
    DENOISE = "denoise"
    SUPERRES = "superres"
    ANOMALY = "anomaly"
    SEGMENT = "segment"

    def label(self) -> str:
        return {"synthesize": "Synthesize", "denoise": "Denoise", "superres": "Super-resolve",
                "anomaly": "Anomaly map", "segment": "Segment"}[self.value]


class SliceAxis(enum.Enum):
    MODEL = -1
    AXIAL = 0
    CORONAL = 1
    SAGITTAL = 2

    def label(self) -> str:
        return {-1: "As the model card says", 0: "k (axial)", 1: "j (coronal)", 2: "i (sagittal)"}[self.value]


class Colormap(enum.Enum):
    INFERNO = "Inferno"
    VIRIDIS = "Viridis"
    MAGMA = "Magma"
    PLASMA = "Plasma"

    def label(self) -> str:
        return self.value


@parameterNodeWrapper
class MedGANParameterNode:
    """The panel's state, saved with the scene.

    inputVolume: the scan; batchMode: run on the ticked volumes too; task; modelId / device: set by the panel's
    model and device lists; overlap, batchSize (0 = auto), sliceAxis, force: advanced; outputNode: overwrite this
    node instead of creating one; colormap, opacity, useCardThreshold, threshold, makeSegmentation: anomaly display.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    batchMode: bool = False
    task: Task = Task.SYNTHESIZE
    modelId: str = ""
    device: str = "auto"
    overlap: Annotated[float, WithinRange(0.0, 0.9), Decimals(2)] = 0.25
    batchSize: Annotated[int, WithinRange(0, 256)] = 0
    sliceAxis: SliceAxis = SliceAxis.MODEL
    force: bool = False
    outputNode: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode]  # noqa: UP007  (typing the wrapper reads)
    colormap: Colormap = Colormap.INFERNO
    opacity: Annotated[float, WithinRange(0.0, 1.0), Decimals(2)] = 0.5
    useCardThreshold: bool = True
    # the map is |x - reconstruction| of intensities normalised to [-1, 1]: it lies in [0, 2]
    threshold: Annotated[float, WithinRange(0.0, 2.0), Decimals(3)] = 0.1
    makeSegmentation: bool = False


#
# MedGANWidget
#


class MedGANJob:
    """One Apply: inference for one or more prepared requests on a worker thread; the GUI polls it.

    The worker touches no MRML node (``slicer_bridge.execute`` works on Volumes); progress arrives through a
    thread-safe queue; ``cancel`` (a threading.Event) is checked by the engine between batches.
    """

    def __init__(self, requests: list) -> None:
        self.requests = requests
        # made here, on the main thread: the worker never calls into a MRML node
        self.labels = [f"{r.task} of {r.input_node.GetName()} with {r.model}" for r in requests]
        self.cancel = threading.Event()
        self.messages: queue.Queue = queue.Queue()
        self.results: list = []
        self.error: BaseException | None = None
        self.trace = ""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="MedGAN inference", daemon=True)

    def start(self) -> MedGANJob:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            count = len(self.requests)
            for index, request in enumerate(self.requests):
                def progress(fraction: float, message: str, index=index) -> None:
                    prefix = f"[{index + 1}/{count}] " if count > 1 else ""
                    self.messages.put(((index + fraction) / count, f"{prefix}{self.labels[index]}: {message}"))

                self.results.append(slicer_bridge.execute(request, progress=progress, cancel=self.cancel))
        except BaseException as exc:  # reported on the main thread
            self.error = exc
            self.trace = traceback.format_exc()
        finally:
            self.done.set()

    def latestProgress(self) -> tuple[float, str] | None:
        latest = None
        while True:
            try:
                latest = self.messages.get_nowait()
            except queue.Empty:
                return latest


class MedGANWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Widgets are bound to the parameter node; Apply starts a MedGANJob and becomes Cancel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job: MedGANJob | None = None
        self._lastAnomalyNode = None
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
        anomaly = p.task == Task.ANOMALY
        self.ui.anomalyCollapsibleButton.enabled = anomaly or self._lastAnomalyNode is not None
        self.ui.thresholdSliderWidget.enabled = not p.useCardThreshold
        self.ui.sliceAxisComboBox.enabled = self.logic.modelIs2D(p.modelId)
        deviceIndex = self.ui.deviceComboBox.findData(p.device)
        if deviceIndex >= 0 and deviceIndex != self.ui.deviceComboBox.currentIndex:
            wasBlocked = self.ui.deviceComboBox.blockSignals(True)
            self.ui.deviceComboBox.currentIndex = deviceIndex
            self.ui.deviceComboBox.blockSignals(wasBlocked)
        if self._lastAnomalyNode is not None and slicer.mrmlScene.IsNodePresent(self._lastAnomalyNode):
            slicer_bridge.update_anomaly_display(
                self._lastAnomalyNode, slicer.mrmlScene, opacity=p.opacity, colormap=p.colormap.value,
                display_threshold=None if p.useCardThreshold else p.threshold)
        self.updateApplyButton()

    def updateApplyButton(self) -> None:
        p = self._parameterNode
        if self._job is not None:
            self.ui.applyButton.text = "Cancel"
            self.ui.applyButton.toolTip = "Stop the run; it stops within one batch and leaves nothing behind."
            self.ui.applyButton.enabled = not self._job.cancel.is_set()
            return
        if self._missingDependencies:
            self.ui.applyButton.text = "Install dependencies"
            self.ui.applyButton.enabled = True
            self.ui.applyButton.toolTip = "Install " + ", ".join(self._missingDependencies) + " (first use only)."
            return
        self.ui.applyButton.text = "Apply"
        ready = p is not None and p.inputVolume is not None and bool(p.modelId)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = ("Run the task on the input volume." if ready else
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
                self.ui.modelCardBrowser.html = ("MedGAN needs " + ", ".join(self._missingDependencies) + " to list "
                                                 "and run models. Press <b>Install dependencies</b> below.")
                return
            entries = self.logic.modelsFor(p.task.value, p.inputVolume)
            for card, problem in entries:
                label = f"{card.name} ({card.id})" + ("" if problem is None else "  [does not fit the input]")
                combo.addItem(label, card.id)
            ids = [card.id for card, _ in entries]
            if p.modelId not in ids:
                fitting = [card.id for card, problem in entries if problem is None]
                p.modelId = fitting[0] if fitting else (ids[0] if ids else "")
            if p.modelId:
                combo.currentIndex = ids.index(p.modelId)
            entry = next(((card, problem) for card, problem in entries if card.id == p.modelId), None)
            self.ui.modelCardBrowser.html = (panel_text.card_summary_html(*entry) if entry else
                                             f"No {p.task.label().lower()} model is installed. Use Import model... "
                                             f"to add one.")
            if entry and p.useCardThreshold and entry[0].extras.get("threshold") is not None:
                p.threshold = min(2.0, float(entry[0].extras["threshold"]))
        finally:
            self._updatingModels = False

    def populateDevices(self) -> None:
        combo = self.ui.deviceComboBox
        combo.clear()
        for label, device in self.logic.devices():
            combo.addItem(label, device)

    # --- GUI -> state (the lists the parameter node cannot bind by itself) ----------------------------------------
    def onModelChanged(self, index: int) -> None:
        if self._updatingModels or self._parameterNode is None or index < 0:
            return
        self._parameterNode.modelId = self.ui.modelComboBox.itemData(index) or ""

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def onSelectStudy(self) -> None:
        p = self._parameterNode
        if p is None or p.inputVolume is None:
            return
        study = slicer_bridge.study_volume_nodes(slicer.mrmlScene, p.inputVolume)
        for node in study:
            self.ui.batchVolumesSelector.setCheckState(node, qt.Qt.Checked)

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Import model: a model folder's card.json, or a pix2pix/CycleGAN checkpoint",
            "", "MedGAN model card or PyTorch checkpoint (card.json *.pth *.pt)")
        if not path:
            return
        options = {}
        if path.lower().endswith((".pth", ".pt")):
            options = self.askCheckpointOptions(os.path.basename(path))
            if options is None:
                return
        elif os.path.basename(path) == "card.json":
            path = os.path.dirname(path)
        with slicer.util.tryWithErrorDisplay("Could not import the model.", waitCursor=True):
            card = self.logic.importModel(path, **options)
            self._modelListKey = None
            self.ui.statusLabel.text = f"Imported model {card.id} into {card.folder}."
            if card.task == self._parameterNode.task.value:
                self._parameterNode.modelId = card.id
            self.onParameterNodeModified()

    def askCheckpointOptions(self, fileName: str) -> dict | None:
        """What a pytorch-CycleGAN-and-pix2pix checkpoint does not say: id, task, modalities, output window."""
        dialog = qt.QDialog(slicer.util.mainWindow())
        dialog.setWindowTitle(f"Import {fileName}")
        form = qt.QFormLayout(dialog)
        modelId = qt.QLineEdit(os.path.splitext(fileName)[0].lower().replace("_", "-"))
        task = qt.QComboBox()
        task.addItems(["synthesize", "denoise"])
        inputModality, outputModality = qt.QComboBox(), qt.QComboBox()
        inputModality.addItems(["MR", "CT"])
        outputModality.addItems(["MR", "CT"])
        inputContrast, outputContrast = qt.QLineEdit("T1w"), qt.QLineEdit("T2w")
        low, high = qt.QDoubleSpinBox(), qt.QDoubleSpinBox()
        for box, value in ((low, 0.0), (high, 1000.0)):
            box.setRange(-5000.0, 50000.0)
            box.value = value
        for label, widget in (("Model id:", modelId), ("Task:", task), ("Input modality:", inputModality),
                              ("Input contrast:", inputContrast), ("Output modality:", outputModality),
                              ("Output contrast:", outputContrast), ("Output window low:", low),
                              ("Output window high:", high)):
            form.addRow(label, widget)
        buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Ok | qt.QDialogButtonBox.Cancel)
        buttons.accepted.connect(dialog.accept)
        buttons.rejected.connect(dialog.reject)
        form.addRow(buttons)
        if not dialog.exec_():
            return None
        return {"model_id": modelId.text.strip(), "task": task.currentText,
                "input_modality": inputModality.currentText, "input_contrast": inputContrast.text.strip() or None,
                "output_modality": outputModality.currentText,
                "output_contrast": outputContrast.text.strip() or None, "output_window": [low.value, high.value]}

    # --- Apply / Cancel --------------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._job is not None:
            self._job.cancel.set()
            self.ui.statusLabel.text = "Cancelling: stopping after the current batch..."
            self.updateApplyButton()
            return
        p = self._parameterNode
        if self._missingDependencies:
            try:
                installed = self.logic.ensureDependencies(askConfirmation=True)
            except Exception as exc:
                self.showError(exc, traceback.format_exc())
                return
            if not installed:
                self.ui.statusLabel.text = ("Not installed: MedGAN cannot run without " +
                                            ", ".join(self._missingDependencies) + ". Press the button again to "
                                            "install them.")
                return
            self._missingDependencies = []
            self._modelListKey = None
            self.populateDevices()
            self.ui.statusLabel.text = "Dependencies installed. Choose a model and press Apply."
            self.onParameterNodeModified()
            return
        try:
            inputs = [p.inputVolume]
            if p.batchMode:
                ticked = list(self.ui.batchVolumesSelector.checkedNodes())
                inputs += [node for node in ticked if node.GetID() != p.inputVolume.GetID()]
            options = self.logic.optionsFromParameters(p)
            try:
                requests = self.logic.prepare(inputs, p.task.value, p.modelId, p.device, p.outputNode, **options)
            except slicer_bridge.UnsuitableInputError as exc:  # modality, voxel size or field of view
                if p.force or not slicer.util.confirmYesNoDisplay(
                        f"{exc}\n\nRun anyway?", windowTitle="MedGAN: the input does not fit the model"):
                    raise
                options["force"] = True
                requests = self.logic.prepare(inputs, p.task.value, p.modelId, p.device, p.outputNode, **options)
        except Exception as exc:
            self.showError(exc, traceback.format_exc())
            return
        self._job = MedGANJob(requests).start()
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = f"Running {p.task.label().lower()} with {p.modelId}..."
        self.updateApplyButton()
        self._timer.start()

    def onPollJob(self) -> None:
        """Main thread, every 100 ms: show progress; when the worker is done, make the nodes or report."""
        job = self._job
        if job is None:
            self._timer.stop()
            return
        latest = job.latestProgress()
        if latest is not None:
            fraction, message = latest
            self.ui.progressBar.value = int(round(100 * fraction))
            self.ui.statusLabel.text = message
        if not job.done.is_set():
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.setVisible(False)
        try:
            if job.error is not None:
                if isinstance(job.error, medgan_engine.CancelledError):
                    self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
                else:
                    self.showError(job.error, job.trace)
                return
            nodes, status = self.logic.finish(job)
            self._lastAnomalyNode = next((n for n in nodes if n.GetAttribute("MedGAN.kind") == "anomaly_map"), None)
            self.ui.statusLabel.text = status
        except Exception as exc:
            self.showError(exc, traceback.format_exc())
        finally:
            self.updateApplyButton()
            self.onParameterNodeModified()

    def showError(self, exc: BaseException, trace: str) -> None:
        """One clear dialog; the full trace goes to the log (and the dialog's details)."""
        logging.error(trace)
        message = str(exc) if isinstance(exc, medgan_engine.MedGANError) else f"{type(exc).__name__}: {exc}"
        self.ui.statusLabel.text = f"Failed: {message}"
        slicer.util.errorDisplay(message, windowTitle="MedGAN", detailedText=trace)


#
# MedGANLogic
#


class MedGANLogic(ScriptedLoadableModuleLogic):
    """MedGAN's module logic: everything the panel does, callable from the Python console with nodes.

    The MRML work is in ``MedGANLogic.slicer_bridge`` (tested outside Slicer); this class adds the application's
    scene, dependency installation, the parameter node, and the worker-thread split used by the panel.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MedGANParameterNode(super().getParameterNode())

    # --- dependencies ---------------------------------------------------------------------------------------------
    def missingDependencies(self) -> list[str]:
        import importlib.util

        missing = [] if importlib.util.find_spec("torch") else [f"torch{TORCH_REQUIREMENT}"]
        missing += [req for name, req in ENGINE_REQUIREMENTS if importlib.util.find_spec(name) is None]
        return missing

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what the engine needs on first use: torch through the PyTorch extension when it is installed
        (it picks the CUDA build that fits the driver), else pip; then MONAI, safetensors, PyYAML, SciPy.
        Returns False when the user declines (nothing is installed then)."""
        missing = self.missingDependencies()
        if not missing:
            return True
        if askConfirmation and not slicer.app.commandOptions().testingEnabled:
            text = ("MedGAN needs these Python packages, which are not installed yet:\n\n  " + "\n  ".join(missing) +
                    "\n\nInstall them now? This downloads a few hundred MB (PyTorch) and may take minutes.")
            if not slicer.util.confirmOkCancelDisplay(text, windowTitle="MedGAN: install dependencies"):
                return False
        if any(req.startswith("torch") for req in missing):
            self._installTorch()
        others = [req for req in missing if not req.startswith("torch")]
        if others:
            slicer.util.pip_install(" ".join(others))
        still = self.missingDependencies()
        if still:
            raise RuntimeError(f"Could not install {', '.join(still)}; install them from the Python console with "
                               f"slicer.util.pip_install('{' '.join(still)}').")
        return True

    @staticmethod
    def _installTorch() -> None:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.pip_install(f"torch{TORCH_REQUIREMENT}")
            return
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise RuntimeError("PyTorch was not installed (PyTorch extension). Install it from the PyTorch Utils "
                               "module and press Apply again.")

    # --- what the panel lists ---------------------------------------------------------------------------------------
    def modelsFor(self, task: str, inputVolume=None) -> list:
        volume = None
        if inputVolume is not None:
            try:
                volume = slicer_bridge.header_volume(inputVolume, **self.declaredModality(inputVolume))
            except medgan_engine.InputError:
                volume = None
        return slicer_bridge.models_for(task, volume)

    def modelIs2D(self, modelId: str) -> bool:
        if not modelId or self.missingDependencies():
            return False
        try:
            from MedGANLogic.models import registry

            return registry.get_model(modelId).dims != "3d"
        except medgan_engine.MedGANError:
            return False

    def devices(self) -> list[tuple[str, str]]:
        return panel_text.device_choices()

    def describeInput(self, inputVolume) -> str:
        if inputVolume is None:
            return "No input volume: load one (File > Add Data, or Sample Data > MedGAN)."
        try:
            volume = slicer_bridge.header_volume(inputVolume, **self.declaredModality(inputVolume))
        except medgan_engine.InputError as exc:
            return str(exc)
        modality = " ".join(str(v) for v in (volume.metadata.get("modality"), volume.metadata.get("contrast"))
                            if v) or ("looks like CT (not recorded)" if volume.metadata.get("guessed_modality")
                                      else "modality not recorded")
        spacing = " x ".join(f"{s:.2f}" for s in volume.spacing)
        fov = " x ".join(f"{e:.0f}" for e in volume.physical_extent())
        note = f"; under transform {volume.metadata['transform_hardened']}" if "transform_hardened" in volume.metadata \
            else ""
        return f"{modality}; {volume.shape[::-1]} voxels of {spacing} mm; field of view {fov} mm{note}"

    def declaredModality(self, node) -> dict:
        """{"modality", "contrast"} of a volume loaded from MedGAN's sample data, from the folder's manifest, when
        the node does not record them itself (empty otherwise). Passed to the runs, never written to the node."""
        if node is None or node.GetAttribute("MedGAN.modality") or self.missingDependencies():
            return {}
        import pathlib

        from MedGANLogic.demo import load_manifest

        for entry in load_manifest(pathlib.Path(resourceFile("SampleData"))):
            if node.GetName() in (f"MedGAN {entry['name']}", entry["name"]):
                return {key: str(entry[key]) for key in ("modality", "contrast") if entry.get(key)}
        return {}

    def optionsFromParameters(self, p) -> dict:
        options: dict[str, Any] = {"overlap": float(p.overlap), "colormap": p.colormap.value,
                                   "opacity": float(p.opacity), "make_segmentation": bool(p.makeSegmentation)}
        if p.batchSize > 0:
            options["batch_size"] = int(p.batchSize)
        if p.sliceAxis != SliceAxis.MODEL and self.modelIs2D(p.modelId):
            options["slice_axis"] = int(p.sliceAxis.value)
        if p.force:
            options["force"] = True
        if p.task == Task.ANOMALY and not p.useCardThreshold:
            options["threshold"] = float(p.threshold)
        if p.task != Task.ANOMALY:
            for key in ("colormap", "make_segmentation"):
                options.pop(key)
        return options

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
                **options) -> list:
        """Main thread: one RunRequest per input (the output node applies to a single input only)."""
        if outputNode is not None and len(inputVolumes) > 1:
            raise medgan_engine.InputError("An output node can be overwritten by a single run only; choose "
                                           "'Create new node' for a batch.")
        return [slicer_bridge.prepare_run(slicer.mrmlScene, node, task, model=model or None, device=device,
                                          output_node=outputNode, **{**self.declaredModality(node), **options})
                for node in inputVolumes]

    def finish(self, job: MedGANJob) -> tuple[list, str]:
        """Main thread: the nodes of a finished job (all or nothing) and a status line."""
        with slicer_bridge.SceneTransaction(slicer.mrmlScene):
            nodes = []
            for request, result in zip(job.requests, job.results):
                nodes += slicer_bridge.finish_run(slicer.mrmlScene, request, result)
        status = slicer_bridge.describe_result(job.results[-1])
        if len(job.results) > 1:
            status = f"{len(job.results)} volumes done; last: {status}"
        warnings = [w for request in job.requests for w in request.warnings]
        if warnings:
            status += " Ran despite: " + "; ".join(warnings) + "."
        return nodes, status


#
# MedGANTest
#


class MedGANTest(ScriptedLoadableModuleTest):
    """Self-test for "Reload and Test": the real module on the bundled sample data, every task.

    Uses the built-in models (Resources/Models) on the CPU; for each task it loads the sample volume that fits
    the model, runs the module logic and checks the new nodes (geometry, provenance, display), then checks that
    the panel runs in the background, can be cancelled, and leaves the scene unchanged when cancelled.
    """

    TASKS = ("synthesize", "denoise", "superres", "anomaly", "segment")

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

    # helpers
    def loadSample(self, card):
        import pathlib

        from MedGANLogic.demo import load_manifest, pick_sample

        entries = load_manifest(pathlib.Path(resourceFile("SampleData")))
        self.assertTrue(entries, "Resources/SampleData/manifest.json is missing: the extension package is incomplete")
        entry = pick_sample(card, entries)
        self.assertIsNotNone(entry, f"no sample volume fits model {card.id}")
        node = slicer.util.loadVolume(str(entry["path"]), {"name": f"MedGAN {entry['name']}"})
        self.assertEqual(MedGANLogic().declaredModality(node).get("modality"), entry.get("modality"))
        return node

    def builtinModel(self, task):
        from MedGANLogic.models import registry

        cards = [c for c in registry.list_models(task) if c.source == "builtin"]
        self.assertTrue(cards, f"no built-in {task} model in Resources/Models: the extension package is incomplete")
        return cards[0]

    @staticmethod
    def matrix(node):
        m = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m)
        return [m.GetElement(r, c) for r in range(4) for c in range(4)]

    # tests
    def test_EveryTask(self):
        self.delayDisplay("Running every task on the sample data")
        logic = MedGANLogic()
        self.assertTrue(logic.ensureDependencies(askConfirmation=False))
        for task in self.TASKS:
            card = self.builtinModel(task)
            node = self.loadSample(card)
            before = slicer.util.arrayFromVolume(node).copy()
            fractions = []
            nodes = logic.process(node, task, model=card.id, device="cpu",
                                  progress=lambda f, m, record=fractions.append: record(f), make_segmentation=True)
            self.assertTrue(nodes, f"{task}: no output node")
            out = nodes[0]
            self.assertEqual(out.GetAttribute("MedGAN.model"), card.id)
            self.assertEqual(out.GetAttribute("MedGAN.synthetic"), "true")
            self.assertEqual(len(out.GetAttribute("MedGAN.sha256")), 64)
            self.assertEqual(fractions[-1], 1.0)
            self.assertTrue((slicer.util.arrayFromVolume(node) == before).all(), f"{task}: input modified")
            if task == "segment":
                self.assertTrue(out.IsA("vtkMRMLSegmentationNode"))
                self.assertGreater(out.GetSegmentation().GetNumberOfSegments(), 0)
            elif task == "superres":
                spacing_in, spacing_out = node.GetSpacing(), out.GetSpacing()
                self.assertTrue(all(o <= i + 1e-6 for i, o in zip(spacing_in, spacing_out)))
                self.assertTrue(any(o < i - 1e-6 for i, o in zip(spacing_in, spacing_out)))
            else:
                self.assertEqual(self.matrix(out), self.matrix(node), f"{task}: geometry differs from the input")
            if task == "anomaly":
                composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
                self.assertEqual(composite.GetForegroundVolumeID(), out.GetID())
                self.assertIsNotNone(out.GetAttribute("MedGAN.case_score"))
            self.delayDisplay(f"{task}: {out.GetName()}")

    def test_InputIsNeverModifiedAndOverwriteIsRefused(self):
        card = self.builtinModel("synthesize")
        node = self.loadSample(card)
        with self.assertRaises(medgan_engine.InputError):
            MedGANLogic().process(node, "synthesize", model=card.id, device="cpu", outputNode=node)

    def test_CancelLeavesNothing(self):
        card = self.builtinModel("synthesize")
        node = self.loadSample(card)
        count = slicer.mrmlScene.GetNumberOfNodes()
        stop = threading.Event()
        stop.set()
        with self.assertRaises(medgan_engine.CancelledError):
            MedGANLogic().process(node, "synthesize", model=card.id, device="cpu", cancel=stop)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)

    def test_PanelRunsInTheBackground(self):
        import time

        card = self.builtinModel("synthesize")
        node = self.loadSample(card)
        slicer.util.selectModule("MedGAN")
        widget = slicer.modules.MedGANWidget
        p = widget.logic.getParameterNode()
        p.inputVolume = node
        p.task = Task.SYNTHESIZE
        p.modelId = card.id
        p.device = "cpu"
        p.batchSize = 1
        # cancel: Apply, then Apply again (now Cancel) -> nothing added
        count = slicer.mrmlScene.GetNumberOfNodes()
        widget.onApplyButton()
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        widget.onApplyButton()
        deadline = time.time() + 120
        while widget._job is not None and time.time() < deadline:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertIsNone(widget._job)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        # a full run: the GUI keeps processing events while the worker runs, then the node appears
        widget.onApplyButton()
        ticks = 0
        while widget._job is not None and time.time() < deadline + 240:
            slicer.app.processEvents()
            ticks += 1
            time.sleep(0.05)
        self.assertGreater(ticks, 0)
        self.assertEqual(widget.ui.applyButton.text, "Apply")
        outputs = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if n.GetAttribute("MedGAN.model") == card.id]
        self.assertEqual(len(outputs), 1)
        self.delayDisplay("Test passed")
