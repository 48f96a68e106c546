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
UI_FILE = REPO / "Resources" / "UI" / "MedGAN.ui"

# The class each widget must have for what MedGAN.py does with it (e.g. checkedNodes() needs the checkable combo).
EXPECTED_CLASSES = {
    "inputVolumeSelector": "qMRMLNodeComboBox", "outputNodeSelector": "qMRMLNodeComboBox",
    "batchVolumesSelector": "qMRMLCheckableNodeComboBox", "batchCheckBox": "QCheckBox",
    "selectStudyButton": "QPushButton", "taskComboBox": "QComboBox", "modelComboBox": "QComboBox",
    "modelCardBrowser": "QTextBrowser", "importModelButton": "QPushButton", "deviceComboBox": "QComboBox",
    "inputInfoLabel": "QLabel", "advancedCollapsibleButton": "ctkCollapsibleButton",
    "overlapSliderWidget": "ctkSliderWidget", "batchSizeSpinBox": "QSpinBox", "sliceAxisComboBox": "QComboBox",
    "forceCheckBox": "QCheckBox", "anomalyCollapsibleButton": "ctkCollapsibleButton",
    "colormapComboBox": "QComboBox", "opacitySliderWidget": "ctkSliderWidget",
    "cardThresholdCheckBox": "QCheckBox", "thresholdSliderWidget": "ctkSliderWidget",
    "makeSegmentationCheckBox": "QCheckBox", "applyButton": "QPushButton", "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
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


def _module_ast() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(), filename=str(MODULE_PY))


def _class(tree: ast.Module, name: str) -> ast.ClassDef:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    raise AssertionError(f"class {name} not found in MedGAN.py")


# --- the module file ---------------------------------------------------------------------------------------------
def test_module_compiles_and_follows_the_template(tmp_path):
    py_compile.compile(str(MODULE_PY), cfile=str(tmp_path / "MedGAN.pyc"), doraise=True)
    tree = _module_ast()
    bases = {node.name: [ast.unparse(b) for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}
    assert bases["MedGAN"] == ["ScriptedLoadableModule"]
    assert bases["MedGANWidget"][0] == "ScriptedLoadableModuleWidget"
    assert bases["MedGANLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["MedGANTest"] == ["ScriptedLoadableModuleTest"]
    decorators = [ast.unparse(d) for d in _class(tree, "MedGANParameterNode").decorator_list]
    assert decorators == ["parameterNodeWrapper"]
    source = MODULE_PY.read_text()
    # the engine package under an alias, so the template's MedGANLogic class does not shadow it
    assert "import MedGANLogic as medgan_engine" in source
    top_imports = {alias.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names} | {node.module.split(".")[0] for node in tree.body
                                               if isinstance(node, ast.ImportFrom) and node.module}
    assert not top_imports & {"torch", "monai", "safetensors"}, "dependencies are installed on first use"
    assert 'slicer.app.connect("startupCompleted()", registerSampleData)' in source
    assert "slicer.util.loadUI(self.resourcePath(\"UI/MedGAN.ui\"))" in source
    assert "PyTorchUtils" in source and "slicer.util.pip_install" in source and "confirmOkCancelDisplay" in source
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
    tasks = next(n for n in test_class.body if isinstance(n, ast.Assign) and n.targets[0].id == "TASKS")
    from MedGANLogic.tasks import TASKS

    assert tuple(ast.literal_eval(tasks.value)) == tuple(TASKS.names())


def test_task_enum_matches_the_engine_and_the_ui():
    tree = _module_ast()
    task = _class(tree, "Task")
    values = [ast.literal_eval(n.value) for n in task.body if isinstance(n, ast.Assign)]
    from MedGANLogic.tasks import TASKS

    assert tuple(values) == tuple(TASKS.names())
    label = next(n for n in task.body if isinstance(n, ast.FunctionDef) and n.name == "label")
    labels = ast.literal_eval(next(n for n in ast.walk(label) if isinstance(n, ast.Dict)))
    root = ET.parse(UI_FILE).getroot()
    combo = next(w for w in root.iter("widget") if w.get("name") == "taskComboBox")
    items = [item.find("property/string").text for item in combo.findall("item")]
    assert items == [labels[v] for v in values]


# --- the .ui and the code agree ------------------------------------------------------------------------------------
def test_every_widget_the_code_uses_exists_with_the_right_class():
    widgets = _ui_widgets()
    used = set(re.findall(r"\bui\.(\w+)", MODULE_PY.read_text()))
    assert used, "MedGAN.py uses no widget?"
    missing = sorted(used - set(widgets))
    assert not missing, f"MedGAN.py uses widgets that MedGAN.ui lacks: {missing}"
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
    tree = _module_ast()
    params = _class(tree, "MedGANParameterNode")
    enums = {n.name for n in tree.body if isinstance(n, ast.ClassDef) and any(ast.unparse(b) == "enum.Enum"
                                                                                for b in n.bases)}
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
    for script in _cmake_set(text, "MODULE_PYTHON_SCRIPTS"):
        assert (MODULE_DIR / script.replace("${MODULE_NAME}", name)).is_file()
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
    assert "MedGANLogic/slicer_bridge.py" in globbed
    # every Resources/ file the module opens is bundled (or a folder whose files are)
    used = set(re.findall(r'(?:resourceFile|resourcePath)\("([^"]+)"\)', MODULE_PY.read_text()))
    assert {"UI/MedGAN.ui", "Icons/MedGAN.png", "SampleData"} <= used
    bundled = set(resources) | globbed
    for item in used:
        path = f"Resources/{item}"
        assert path in bundled or "${MEDGAN_ROOT}/" + path + "/*" in text, f"{path} is not bundled"
    assert "SOURCE_DIR ${MEDGAN_ROOT}" in text and "NO_INSTALL_SUBDIR" in text


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
