"""The engine imports without 3D Slicer: no module of ``MedGANLogic`` pulls in slicer, Qt, ctk or VTK when imported.

``MedGANLogic.slicer_bridge`` works on MRML scenes, but imports ``slicer``/``vtk`` inside its functions only, so the
command line, the Python API and the training scripts run where Slicer is not installed, and Slicer's own start-up
does not pay for what the module does not use yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("slicer", "qt", "ctk", "vtk", "vtkmodules", "PySide6", "PyQt5", "PyQt6")

# Runs in a fresh interpreter: imports every module of the package (walking its folders, so a new module is checked
# without editing this test), then reports which top-level packages of FORBIDDEN got imported.
WALK_AND_IMPORT = """
import importlib, json, pkgutil, sys
import MedGANLogic
names = sorted(m.name for m in pkgutil.walk_packages(MedGANLogic.__path__, "MedGANLogic.")
               if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
forbidden = set(sys.argv[1].split(","))
print(json.dumps({"modules": names, "loaded": sorted({m.split(".")[0] for m in sys.modules} & forbidden)}))
"""


def test_every_engine_module_imports_without_slicer_qt_ctk_or_vtk():
    out = subprocess.run([sys.executable, "-c", WALK_AND_IMPORT, ",".join(FORBIDDEN)], capture_output=True, text=True,
                         cwd=REPO, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    modules = set(report["modules"])
    on_disk = {".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "MedGANLogic").rglob("*.py")
               if "__pycache__" not in p.parts and p.name not in ("__init__.py", "__main__.py")}
    assert on_disk <= modules, f"modules the walk did not import: {sorted(on_disk - modules)}"
    assert {"MedGANLogic.slicer_bridge.nodes", "MedGANLogic.slicer_bridge.running", "MedGANLogic.pipeline"} <= modules
    assert report["loaded"] == [], f"importing the engine loaded {report['loaded']}"


def test_what_the_slicer_module_loads_at_start_up_needs_nothing_installed_on_first_use():
    # Slicer imports MedGAN.py at start-up, before the panel has offered to install PyTorch and the rest: the
    # engine, the bridge, the task table and the module's plain-Python library must import without them.
    code = """
import json, sys
sys.path.insert(0, "MedGANExtension")
import MedGANLogic, MedGANLogic.slicer_bridge, MedGANLogic.tasks
import MedGANLib.dependencies, MedGANLib.job, MedGANLib.panel_text, MedGANLib.sample_data
later = {name for name, _ in MedGANLib.dependencies.ENGINE_REQUIREMENTS} | {"torch"}
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & later)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
