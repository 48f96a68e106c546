"""What the engine needs that Slicer does not bundle, checked without importing it and installed on first use.

PyTorch comes through the PyTorch extension when it is installed (it picks the CUDA build that fits the driver),
else pip; then MONAI, safetensors, PyYAML and SciPy through ``slicer.util.pip_install``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re

# Python packages the engine needs at run time that Slicer does not bundle: (import name, pip requirement).
# The minimums are the versions the engine is tested with (pyproject.toml's dependencies).
ENGINE_REQUIREMENTS = (("monai", "monai>=1.3"), ("safetensors", "safetensors>=0.4"), ("yaml", "pyyaml>=6"),
                       ("scipy", "scipy>=1.10"))
TORCH_REQUIREMENT = ">=2.1"


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: "2.13.0+cpu" -> (2, 13, 0); "1.4.0rc1" -> (1, 4, 0)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.group() != piece:  # a pre-release tail ends the release part
            break
    return tuple(parts)


def unmet(requirement: str, installed: str | None) -> str | None:
    """Why ``installed`` (a version string, None = not installed) does not meet ``requirement`` ("name>=x.y"),
    or None when it does: "monai>=1.3 (not installed)", "monai>=1.3 (installed 1.2.0)"."""
    name, minimum = requirement.split(">=")
    if installed is None:
        return f"{requirement} (not installed)"
    have, need = _release(installed), _release(minimum)
    width = max(len(have), len(need))
    if have + (0,) * (width - len(have)) < need + (0,) * (width - len(need)):
        return f"{requirement} (installed {installed})"
    return None


def _installed_version(import_name: str, requirement: str) -> str | None:
    if importlib.util.find_spec(import_name) is None:
        return None
    try:
        return importlib.metadata.version(requirement.split(">=")[0])
    except importlib.metadata.PackageNotFoundError:  # importable but without metadata (e.g. a source tree)
        return "0"


def dependency_problems() -> list[str]:
    """Each requirement that is not installed or older than the tested minimum, with what is there, e.g.
    ``["torch>=2.1 (not installed)", "monai>=1.3 (installed 1.2.0)"]`` (found without importing the packages)."""
    wanted = [("torch", f"torch{TORCH_REQUIREMENT}"), *ENGINE_REQUIREMENTS]
    problems = (unmet(req, _installed_version(name, req)) for name, req in wanted)
    return [p for p in problems if p]


def missing_dependencies() -> list[str]:
    """pip requirements of what is not installed or too old (found without importing anything)."""
    return [problem.split(" (")[0] for problem in dependency_problems()]


def ensure_dependencies(ask_confirmation: bool = True) -> bool:
    """Install what is missing, after asking (never asked under ``--testing``). False when the user declines
    (nothing is installed then); raises RuntimeError saying what to do when an installation fails."""
    import slicer

    problems = dependency_problems()
    missing = [problem.split(" (")[0] for problem in problems]
    if not missing:
        return True
    if ask_confirmation and not slicer.app.commandOptions().testingEnabled:
        text = ("MedGAN needs these Python packages, which are missing or older than the versions it is tested "
                "with:\n\n  " + "\n  ".join(problems) + "\n\nMedGAN will now run pip install " + " ".join(
                    f"'{req}'" for req in missing) + ".\nInstall them now? This downloads a few hundred MB "
                "(PyTorch) and may take minutes.")
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
