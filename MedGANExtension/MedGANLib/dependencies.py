"""What the engine needs that Slicer does not bundle, checked without importing it and installed on first use.

PyTorch comes through the PyTorch extension when it is installed (it picks the CUDA build that fits the driver),
else pip; then MONAI, safetensors, PyYAML and SciPy through ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib.util

# Python packages the engine needs at run time that Slicer does not bundle: (import name, pip requirement).
ENGINE_REQUIREMENTS = (("monai", "monai>=1.3"), ("safetensors", "safetensors>=0.4"), ("yaml", "pyyaml>=6"),
                       ("scipy", "scipy>=1.10"))
TORCH_REQUIREMENT = ">=2.1"


def missing_dependencies() -> list[str]:
    """pip requirements of what is not installed (found without importing anything)."""
    missing = [] if importlib.util.find_spec("torch") else [f"torch{TORCH_REQUIREMENT}"]
    missing += [req for name, req in ENGINE_REQUIREMENTS if importlib.util.find_spec(name) is None]
    return missing


def ensure_dependencies(ask_confirmation: bool = True) -> bool:
    """Install what is missing, after asking (never asked under ``--testing``). False when the user declines
    (nothing is installed then); raises RuntimeError saying what to do when an installation fails."""
    import slicer

    missing = missing_dependencies()
    if not missing:
        return True
    if ask_confirmation and not slicer.app.commandOptions().testingEnabled:
        text = ("MedGAN needs these Python packages, which are not installed yet:\n\n  " + "\n  ".join(missing) +
                "\n\nInstall them now? This downloads a few hundred MB (PyTorch) and may take minutes.")
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle="MedGAN: install dependencies"):
            return False
    if any(req.startswith("torch") for req in missing):
        _install_torch()
    others = [req for req in missing if not req.startswith("torch")]
    if others:
        slicer.util.pip_install(" ".join(others))
    still = missing_dependencies()
    if still:
        raise RuntimeError(f"Could not install {', '.join(still)}; install them from the Python console with "
                           f"slicer.util.pip_install('{' '.join(still)}').")
    return True


def _install_torch() -> None:
    import slicer

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
