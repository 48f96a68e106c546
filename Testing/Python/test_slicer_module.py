"""Static checks of the 3D Slicer module, which cannot run outside the Slicer application: the extension's CMake
files and Extensions Index description agree and name only files that exist; every widget MedGAN.py uses exists in
MedGAN.ui with the class the code expects; the parameter node binds to widgets of fitting types; the module
compiles and follows the scripted-module template; and the panel renders (offscreen Qt) to the README screenshot.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "MedGANExtension"
MODULE_PY = MODULE_DIR / "MedGAN.py"
LIBRARY = MODULE_DIR / "MedGANLib"  # the module's own library (Slicer's <Module>Lib convention)
PARAMETERS_PY = LIBRARY / "parameters.py"
UI_FILE = REPO / "Resources" / "UI" / "MedGAN.ui"

# The class each widget must have for what MedGAN.py does with it (e.g. checkedNodes() needs the checkable combo).
EXPECTED_CLASSES = {
    "inputVolumeSelector": "qMRMLNodeComboBox", "outputNodeSelector": "qMRMLNodeComboBox",
    "batchVolumesSelector": "qMRMLCheckableNodeComboBox", "batchCheckBox": "QCheckBox",
    "selectStudyButton": "QPushButton", "taskComboBox": "QComboBox", "modelComboBox": "QComboBox",
    "modelCardBrowser": "QTextBrowser", "importModelButton": "QPushButton", "deviceComboBox": "QComboBox",
    "inputInfoLabel": "QLabel", "advancedCollapsibleButton": "ctkCollapsibleButton",
    "overlapSliderWidget": "ctkSliderWidget", "batchSizeSpinBox": "QSpinBox", "sliceAxisComboBox": "QComboBox",
    "ensembleComboBox": "QComboBox",
    "forceCheckBox": "QCheckBox", "nativeCheckBox": "QCheckBox", "adaptCheckBox": "QCheckBox",
    "adaptBudgetSpinBox": "QSpinBox", "keepFitCheckBox": "QCheckBox",
    "anomalyCollapsibleButton": "ctkCollapsibleButton",
    "anomalyMapSelector": "qMRMLNodeComboBox", "segmentationShow3DButton": "qMRMLSegmentationShow3DButton",
    "colormapComboBox": "QComboBox", "opacitySliderWidget": "ctkSliderWidget",
    "cardThresholdCheckBox": "QCheckBox", "thresholdSliderWidget": "ctkSliderWidget",
    "makeSegmentationCheckBox": "QCheckBox", "applyButton": "QPushButton", "progressBar": "QProgressBar",
    "statusLabel": "QLabel", "lesionCollapsibleButton": "ctkCollapsibleButton",
    "lesionMaskSelector": "qMRMLNodeComboBox", "lesionSegmentComboBox": "QComboBox", "lesionTypeComboBox": "QComboBox",
}
# parameterNodeWrapper's GUI connectors: which widget class binds which parameter type.
BINDABLE = {"bool": {"QCheckBox"}, "float": {"ctkSliderWidget", "QDoubleSpinBox"}, "int": {"QSpinBox", "QSlider"},
            "enum": {"QComboBox"}, "node": {"qMRMLNodeComboBox"}}


def _cmake_set(text: str, name: str) -> list[str]:
    match = re.search(rf"set\(\s*{name}\s+(.*?)\)", text, re.S)
    assert match, f"set({name} ...) not found"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def _cmake_value(text: str, name: str) -> str:
    match = re.search(rf'set\(\s*{name}\s+"([^"]*)"', text)
    assert match, f"set({name} \"...\") not found"
    return match.group(1)


def _ui_widgets() -> dict[str, str]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def _module_ast(path: Path = MODULE_PY) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_files() -> list[Path]:
    """MedGAN.py and every file of its library: the Python code Slicer loads for the module."""
    return [MODULE_PY, *sorted(LIBRARY.rglob("*.py"))]


def _module_source() -> str:
    return "\n".join(path.read_text() for path in _module_files())


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"class {name} not found")


# --- the module file ---------------------------------------------------------------------------------------------
def test_module_compiles_and_follows_the_template(tmp_path):
    for path in _module_files():
        py_compile.compile(str(path), cfile=str(tmp_path / f"{path.stem}.pyc"), doraise=True)
    tree = _module_ast()
    bases = {node.name: [ast.unparse(b) for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert bases["MedGAN"] == ["ScriptedLoadableModule"]
    assert bases["MedGANWidget"][0] == "ScriptedLoadableModuleWidget"
    assert bases["MedGANLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["MedGANTest"] == ["ScriptedLoadableModuleTest"]
    # the parameter node lives in the module's library and is reachable from MedGAN.py
    decorators = [ast.unparse(d) for d in _class(_module_ast(PARAMETERS_PY), "MedGANParameterNode").decorator_list]
    assert decorators == ["parameterNodeWrapper"]
    assert any(isinstance(node, ast.ImportFrom) and node.module == "MedGANLib.parameters"
               and "MedGANParameterNode" in [a.name for a in node.names] for node in tree.body)
    source = MODULE_PY.read_text()
    # the engine package under an alias, so the template's MedGANLogic class does not shadow it
    assert "import MedGANLogic as medgan_engine" in source
    for path in _module_files():  # nothing the module loads at start-up imports what is installed on first use
        body = _module_ast(path).body
        top_imports = {alias.name.split(".")[0] for node in body if isinstance(node, (ast.Import, ast.ImportFrom))
                       for alias in node.names} | {node.module.split(".")[0] for node in body
                                                   if isinstance(node, ast.ImportFrom) and node.module}
        assert not top_imports & {"torch", "monai", "safetensors"}, f"{path.name}: installed on first use"
    assert 'slicer.app.connect("startupCompleted()", registerSampleData)' in source
    assert "slicer.util.loadUI(self.resourcePath(\"UI/MedGAN.ui\"))" in source
    everything = _module_source()
    assert "PyTorchUtils" in everything and "slicer.util.pip_install" in everything
    assert "confirmOkCancelDisplay" in everything
    # the logic goes through slicer_bridge; the console API takes nodes
    process = next(n for n in _class(tree, "MedGANLogic").body if isinstance(n, ast.FunctionDef)
                   and n.name == "process")
    assert [a.arg for a in process.args.args][:3] == ["self", "inputVolume", "task"]
    assert "slicer_bridge.run_on_node(slicer.mrmlScene" in ast.unparse(process)


def test_self_test_runs_every_task_and_every_test_method():
    tree = _module_ast()
    test_class = _class(tree, "MedGANTest")
    methods = {n.name for n in test_class.body if isinstance(n, ast.FunctionDef)}
    run_test = ast.unparse(next(n for n in test_class.body if isinstance(n, ast.FunctionDef) and n.name == "runTest"))
    for name in sorted(m for m in methods if m.startswith("test_")):
        assert f"self.{name}()" in run_test, f"runTest does not call {name}"
    # the self-test's task list is the engine's task table, every task of it
    tasks = next(n for n in test_class.body if isinstance(n, ast.Assign) and n.targets[0].id == "TASKS")
    assert ast.unparse(tasks.value) == "tuple(TASK_TABLE.names())"
    assert any(isinstance(node, ast.ImportFrom) and node.module == "MedGANLogic.tasks"
               and [(a.name, a.asname) for a in node.names] == [("TASKS", "TASK_TABLE")] for node in tree.body)


def test_task_enum_matches_the_engine_and_the_ui():
    tree = _module_ast(PARAMETERS_PY)
    # the panel's Task enum is made from the engine's task table, its labels are the table's
    task = next(n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "Task")
    assert "TASKS.names()" in ast.unparse(task.value)
    label = next(n for n in _class(tree, "_TaskChoice").body if isinstance(n, ast.FunctionDef) and n.name == "label")
    assert ast.unparse(label.body[-1]) == "return TASKS.get(self.value).label"
    from MedGANLogic.tasks import TASKS

    assert TASKS.names() == ["synthesize", "denoise", "superres", "anomaly", "segment", "lesion"]
    # the .ui lists them in the same order with the same words (the screenshot shows the .ui's items)
    root = ET.parse(UI_FILE).getroot()
    combo = next(w for w in root.iter("widget") if w.get("name") == "taskComboBox")
    items = [item.find("property/string").text for item in combo.findall("item")]
    assert items == [TASKS.get(name).label for name in TASKS.names()]
    # the lesion types likewise, from the engine's list
    from MedGANLogic.lesion_types import LESION_TYPE_LABELS, LESION_TYPES

    combo = next(w for w in root.iter("widget") if w.get("name") == "lesionTypeComboBox")
    assert [item.find("property/string").text for item in combo.findall("item")] == \
        [LESION_TYPE_LABELS[name] for name in LESION_TYPES]


def test_ensemble_choices_match_the_engine_and_the_ui():
    from MedGANLogic.models.ensemble import COUNTS

    tree = _module_ast(PARAMETERS_PY)
    members = [ast.literal_eval(n.value) for n in _class(tree, "Ensemble").body if isinstance(n, ast.Assign)]
    labels = next(ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "ENSEMBLE_LABELS")
    assert members == [0, *COUNTS] and list(labels) == members  # 0: the card's choice; then every count
    root = ET.parse(UI_FILE).getroot()
    combo = next(w for w in root.iter("widget") if w.get("name") == "ensembleComboBox")
    assert [item.find("property/string").text for item in combo.findall("item")] == [labels[m] for m in members]


# --- the .ui and the code agree ------------------------------------------------------------------------------------
def test_every_widget_the_code_uses_exists_with_the_right_class():
    widgets = _ui_widgets()
    used = set(re.findall(r"\bui\.(\w+)", _module_source()))
    assert used, "the module uses no widget?"
    missing = sorted(used - set(widgets))
    assert not missing, f"the module uses widgets that MedGAN.ui lacks: {missing}"
    for name in used:
        assert name in EXPECTED_CLASSES, f"add {name} to EXPECTED_CLASSES with the class the code needs"
    for name, cls in EXPECTED_CLASSES.items():
        assert widgets.get(name) == cls, f"{name}: MedGAN.ui has {widgets.get(name)}, expected {cls}"
    root = ET.parse(UI_FILE).getroot()
    assert root.find("widget").get("class") == "qMRMLWidget" and root.find("widget").get("name") == "MedGAN"
    custom = {c.find("class").text for c in root.iter("customwidget")}
    assert {cls for cls in widgets.values() if not cls.startswith("Q")} <= custom
    for connection in root.iter("connection"):
        assert connection.find("sender").text in widgets and connection.find("receiver").text in widgets


def test_parameter_node_binds_to_widgets_of_fitting_types():
    tree = _module_ast(PARAMETERS_PY)
    params = _class(tree, "MedGANParameterNode")
    enums = {n.name for n in tree.body if isinstance(n, ast.ClassDef) and any(ast.unparse(b) == "enum.Enum"
                                                                                for b in n.bases)}
    enums |= {ast.unparse(n.targets[0]) for n in tree.body if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Call) and ast.unparse(n.value.func) in enums}  # made by an Enum's call
    fields = {}
    for node in params.body:
        if isinstance(node, ast.AnnAssign):
            annotation = ast.unparse(node.annotation)
            base = annotation.split("[", 1)[1].split(",")[0] if annotation.startswith("Annotated") else annotation
            kind = ("enum" if base in enums else "node" if "vtkMRML" in base else base)
            fields[node.target.id] = kind
    root = ET.parse(UI_FILE).getroot()
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
    assert bound, "no widget is bound to the parameter node"
    for name, cls in bound.items():
        assert name in fields, f"widget bound to unknown parameter {name!r}"
        assert cls in BINDABLE[fields[name]], f"{name}: a {cls} cannot show a {fields[name]} parameter"
    # the parameters the panel sets by hand (dynamic lists) are not bound
    assert set(fields) - set(bound) == {"modelId", "device"}


# --- CMake, index description, license ------------------------------------------------------------------------------
def test_top_level_cmake_describes_the_extension():
    text = (REPO / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in text and "include(${Slicer_USE_FILE})" in text
    assert "include(${Slicer_EXTENSION_CPACK})" in text
    for sub in re.findall(r"add_subdirectory\((\w+)\)", text):
        assert (REPO / sub / "CMakeLists.txt").is_file()
    for field in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert _cmake_value(text, f"EXTENSION_{field}"), field
    urls = [_cmake_value(text, "EXTENSION_ICONURL"), *_cmake_value(text, "EXTENSION_SCREENSHOTURLS").split()]
    for url in urls:  # raw URLs of files in this repository: the files must exist
        relative = url.split("/main/", 1)[1]
        assert (REPO / relative).is_file(), f"{url} names a missing file {relative}"
    index = json.loads((REPO / "MedGAN.json").read_text())
    assert index["build_dependencies"] == _cmake_value(text, "EXTENSION_DEPENDS").split()
    assert index["category"] == _cmake_value(text, "EXTENSION_CATEGORY")
    assert index["scm_url"].endswith(".git") and index["build_subdirectory"] == "."
    module_category = re.search(r"self\.parent\.categories = \[\"(\w+)\"\]", MODULE_PY.read_text()).group(1)
    assert module_category == index["category"]


def test_module_cmake_lists_only_existing_files_and_every_resource_the_module_uses():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    name = re.search(r"set\(MODULE_NAME (\w+)\)", text).group(1)
    assert name == "MedGAN"
    scripts = {script.replace("${MODULE_NAME}", name) for script in _cmake_set(text, "MODULE_PYTHON_SCRIPTS")}
    for script in scripts:
        assert (MODULE_DIR / script).is_file()
    # the module's own library (MedGANLib/) is installed beside MedGAN.py: every file of it is listed
    library = {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "MedGANLib").rglob("*.py")}
    assert "MedGANLib/__init__.py" in library and library <= scripts, sorted(library - scripts)
    resources = _cmake_set(text, "MEDGAN_RESOURCES")
    for resource in resources:
        assert (REPO / resource).is_file(), f"CMake lists a missing resource {resource}"
    # the globs (GLOB_RECURSE: "*" reaches into subfolders): each engine pattern matches files, and together
    # they bundle the whole engine but the evaluation package, which list(FILTER ... EXCLUDE) leaves out
    tracked = [str(p.relative_to(REPO)) for top in ("MedGANLogic", "Resources") for p in (REPO / top).rglob("*")
               if p.is_file()]
    globbed = set()
    for block in re.findall(r"file\(GLOB_RECURSE \w+ RELATIVE \$\{MEDGAN_ROOT\}(.*?)\)", text, re.S):
        for pattern in block.split():
            pattern = pattern.replace("${MEDGAN_ROOT}/", "")
            matches = {path for path in tracked if fnmatch.fnmatch(path, pattern) and "__pycache__" not in path}
            if pattern.startswith("MedGANLogic/"):
                assert matches, f"glob {pattern} matches nothing"
            globbed |= matches
    for regex in re.findall(r'list\(FILTER MEDGAN_ENGINE_PYTHON_SCRIPTS EXCLUDE REGEX "([^"]+)"\)', text):
        globbed = {path for path in globbed if not re.search(regex, path)}
    engine = {str(p.relative_to(REPO)) for p in (REPO / "MedGANLogic").rglob("*.py")}
    evaluation = {path for path in engine if path.startswith("MedGANLogic/evaluation/")}
    assert "MedGANLogic/evaluation/metrics.py" in evaluation and not evaluation & globbed
    assert engine - evaluation <= globbed, f"engine files not bundled: {sorted(engine - evaluation - globbed)[:5]}"
    bridge = {str(p.relative_to(REPO)) for p in (REPO / "MedGANLogic" / "slicer_bridge").glob("*.py")}
    assert "MedGANLogic/slicer_bridge/__init__.py" in bridge and bridge <= globbed
    # every Resources/ file the module opens is bundled (or a folder whose files are)
    used = set(re.findall(r'(?:resourceFile|resourcePath)\("([^"]+)"\)', _module_source()))
    assert {"UI/MedGAN.ui", "Icons/MedGAN.png", "SampleData"} <= used
    bundled = set(resources) | globbed
    for item in used:
        path = f"Resources/{item}"
        assert path in bundled or "${MEDGAN_ROOT}/" + path + "/*" in text, f"{path} is not bundled"
    assert "SOURCE_DIR ${MEDGAN_ROOT}" in text and "NO_INSTALL_SUBDIR" in text
    # the denoising fit in Slicer starts from the shipped fit starts: they are bundled
    starts = {str(p.relative_to(REPO)) for p in (REPO / "Resources" / "FitStarts").rglob("*") if p.is_file()}
    assert "Resources/FitStarts/MR/weights.safetensors" in starts and starts <= globbed


def test_license_and_icon():
    license_text = (REPO / "LICENSE.txt").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    from PIL import Image

    with Image.open(REPO / "Resources" / "Icons" / "MedGAN.png") as icon:
        assert icon.size == (128, 128) and icon.format == "PNG"


# --- the panel, rendered ----------------------------------------------------------------------------------------------
def test_panel_renders_offscreen_to_the_screenshot(tmp_path):
    import numpy as np
    from PIL import Image
    from slicer_figures import load_panel, render_panel

    app, panel = load_panel()
    from PySide6.QtWidgets import QWidget

    loaded = {w.objectName(): type(w).__name__ for w in panel.findChildren(QWidget) if w.objectName()}
    for name, cls in EXPECTED_CLASSES.items():
        assert loaded.get(name) == cls, f"{name} loaded as {loaded.get(name)}"
    panel.close()
    path = render_panel(tmp_path / "panel.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 600 and pixels.shape[1] >= 400
    assert pixels.std() > 20  # text, frames and the progress bar, not a blank picture
    committed = REPO / "Resources" / "Screenshots" / "panel.png"
    with Image.open(committed) as image:
        assert image.format == "PNG" and abs(image.width - pixels.shape[1]) < 80


def test_engine_imports_slicer_only_when_a_bridge_function_runs():
    import subprocess
    import sys

    code = ("import sys, MedGANLogic, MedGANLogic.slicer_bridge as b; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('slicer', 'qt', 'ctk', 'vtk', 'vtkmodules')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
