"""`medgan doctor`: what a user needs to know before a run, and what to install when something is missing.

It reports, in this order:

* Python and every package MedGAN needs, against the minimum versions of ``pyproject.toml``, and the optional
  ones (phantom data for ``medgan simulate`` and training); each missing one with the command that installs it;
* torch's CUDA build and the devices torch sees: each GPU's name, memory and bf16 support, the CPU's bf16 support
  (bf16 models run in bf16 only where the device computes it natively);
* every installed model with its source folder, its weights verified against the card's SHA-256;
* where user models live (``$MEDGAN_MODELS_DIR``, default ``~/.medgan/models``).

:func:`diagnose` returns the findings; :func:`run_doctor` prints them and returns the exit code, 1 when a
required package is missing or too old, or a model is invalid or fails its checksum.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

# The CPU build the Makefile's venv installs; a bare `pip install torch` pulls a multi-GB CUDA build.
CPU_TORCH = "torch==2.13.0"
# Distribution name -> module to import, where they differ.
IMPORT_NAMES = {"SimpleITK": "SimpleITK", "pyyaml": "yaml", "pillow": "PIL", "scikit-image": "skimage"}
# Optional extras the doctor checks, and what they are for. (The `test` extra is for developers.)
OPTIONAL_EXTRAS = {"data": "phantom data for `medgan simulate` and training"}
# Statuses that make the exit code non-zero.
PROBLEMS = ("missing", "fail")


@dataclass
class Finding:
    """One line of the report.

    ``status``: ``ok``; ``info`` (a fact, e.g. no CUDA device); ``warn`` (an optional part is missing or
    unusual); ``missing`` (a required package is absent or too old); ``fail`` (a model is broken).
    ``fix``: the command (or action) that resolves it, empty when nothing needs doing.
    """

    section: str
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Requirement:
    distribution: str
    minimum: str | None
    extra: str | None = None  # None: required; else the optional extra that asks for it

    @property
    def module(self) -> str:
        return IMPORT_NAMES.get(self.distribution, self.distribution.replace("-", "_"))

    def install_command(self) -> str:
        if self.distribution == "torch":
            return f"pip install {CPU_TORCH}   (CPU build; for a CUDA GPU, the CUDA build that fits your driver)"
        spec = f"{self.distribution}>={self.minimum}" if self.minimum else self.distribution
        return f"pip install '{spec}'"


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9][0-9.]*))?[^;]*(?:;\s*extra\s*==\s*['\"](\w+)['\"])?")


def parse_requirement(text: str) -> Requirement | None:
    """``'monai>=1.3'`` or ``'nilearn>=0.10; extra == "data"'`` -> :class:`Requirement`."""
    match = _REQUIREMENT.match(text)
    return Requirement(match.group(1), match.group(2), match.group(3)) if match else None


def project_requirements() -> tuple[str, list[Requirement]]:
    """``(requires-python, requirements)`` from the checkout's ``pyproject.toml``, else the installed metadata."""
    pyproject = PACKAGE_ROOT / "pyproject.toml"
    if pyproject.is_file():
        requires_python, lines = _read_pyproject(pyproject.read_text(encoding="utf-8"))
    else:
        dist = importlib.metadata.distribution("medgan")
        lines = list(dist.requires or [])
        requires_python = dist.metadata.get("Requires-Python", "")
    reqs = [r for r in map(parse_requirement, lines) if r and (r.extra is None or r.extra in OPTIONAL_EXTRAS)]
    return requires_python, reqs


def _read_pyproject(text: str) -> tuple[str, list[str]]:
    """``requires-python`` and the requirement lines (extras marked) of a ``pyproject.toml``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11 (Slicer's Python, say): the three fields we need, by pattern
        def listed(key: str) -> list[str]:
            found = re.search(rf"^{key}\s*=\s*\[(.*?)\]", text, re.S | re.M)
            return re.findall(r'"([^"]+)"', found.group(1)) if found else []

        python = re.search(r'^requires-python\s*=\s*"([^"]*)"', text, re.M)
        extras = {extra: listed(extra) for extra in OPTIONAL_EXTRAS}
        project = {"requires-python": python.group(1) if python else "", "dependencies": listed("dependencies"),
                   "optional-dependencies": extras}
    else:
        project = tomllib.loads(text)["project"]
    lines = list(project["dependencies"])
    for extra, deps in project.get("optional-dependencies", {}).items():
        lines += [f'{d}; extra == "{extra}"' for d in deps]
    return project.get("requires-python", ""), lines


def version_tuple(version: str) -> tuple[int, ...]:
    """``'2.13.0+cpu'`` -> ``(2, 13, 0)``: the leading numeric release, enough to compare against a minimum."""
    match = re.match(r"(\d+(?:\.\d+)*)", version)
    return tuple(int(p) for p in match.group(1).split(".")) if match else ()


def _at_least(version: str, minimum: str | None) -> bool:
    return minimum is None or version_tuple(version) >= version_tuple(minimum)


# --- checks ----------------------------------------------------------------------------------------------------
def check_python(requires_python: str) -> Finding:
    version = platform.python_version()
    minimum = requires_python.removeprefix(">=").strip() or None
    detail = f"{version} ({sys.executable}); MedGAN needs {requires_python or 'any'}"
    if _at_least(version, minimum):
        return Finding("python", "Python", "ok", detail)
    return Finding("python", "Python", "missing", detail, f"use Python {minimum} or later")


def check_package(req: Requirement) -> tuple[Finding, Any]:
    """Import the package (so a broken install shows) and compare its version with the minimum."""
    optional = f"; optional, {OPTIONAL_EXTRAS[req.extra]}" if req.extra else ""
    absent = "warn" if req.extra else "missing"
    try:
        module = importlib.import_module(req.module)
    except ImportError as exc:
        return Finding("package", req.distribution, absent, f"not installed{optional}: {exc}",
                       req.install_command()), None
    except Exception as exc:  # a package that is there but fails to import (a wrong binary build, say)
        return Finding("package", req.distribution, absent, f"installed but fails to import{optional}: "
                       f"{type(exc).__name__}: {exc}".splitlines()[0], req.install_command()), None
    try:
        version = importlib.metadata.version(req.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(module, "__version__", "unknown"))
    needs = f" (needs >={req.minimum})" if req.minimum else ""
    if not _at_least(version, req.minimum):
        return Finding("package", req.distribution, absent, f"{version} is too old{needs}{optional}",
                       req.install_command()), module
    return Finding("package", req.distribution, "ok", f"{version}{needs}{optional}"), module


def check_devices(torch: Any) -> list[Finding]:
    """torch's CUDA build, each visible GPU (name, memory, bf16) and the CPU's bf16 support."""
    from .inference import native_bf16

    findings = []
    cuda_build = torch.version.cuda
    if not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is a CPU-only build" if cuda_build is None
               else f"torch {torch.__version__} is built for CUDA {cuda_build}, but no driver or GPU answers")
        fix = ("for a GPU, install the CUDA build of torch that fits your driver (pytorch.org, 'Get started'); "
               "runs use the CPU meanwhile")
        findings.append(Finding("device", "CUDA", "info", f"no CUDA device visible: {why}", fix))
    else:
        findings.append(Finding("device", "CUDA", "ok", f"CUDA {cuda_build}, {torch.cuda.device_count()} GPU(s)"))
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            with torch.cuda.device(index):
                bf16 = native_bf16(torch.device("cuda", index))
            findings.append(Finding("device", f"cuda:{index}", "ok",
                                    f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
                                    f"{props.major}.{props.minor}, bf16: {'yes' if bf16 else 'no'}"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        findings.append(Finding("device", "mps", "ok", "Apple GPU (MPS); models run in fp32 there"))
    bf16 = native_bf16(torch.device("cpu"))
    findings.append(Finding("device", "cpu", "ok", f"{_cpu_name()}, {os.cpu_count()} logical cores, bf16: "
                            + ("yes (AVX512-BF16 or AMX): bf16 models run in bf16" if bf16
                               else "no (bf16 would be emulated): every model runs in fp32")))
    return findings


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_models() -> list[Finding]:
    """Every model folder (built-in, then user), its card validated and its weights' SHA-256 checked."""
    from .errors import ModelError
    from .models.card import load_card
    from .models.registry import builtin_models_dir, user_models_dir, verify_weights

    findings = []
    user = user_models_dir()
    where = "from $MEDGAN_MODELS_DIR" if "MEDGAN_MODELS_DIR" in os.environ else "default; $MEDGAN_MODELS_DIR moves it"
    exists = "" if user.is_dir() else "; not created yet: `medgan import` creates it"
    findings.append(Finding("models", "user models", "ok", f"{user} ({where}{exists})"))
    builtin_ids: set[str] = set()
    for source, root in (("builtin", builtin_models_dir()), ("user", user)):
        folders = sorted(p for p in root.iterdir() if (p / "card.json").is_file()) if root.is_dir() else []
        for folder in folders:
            fix = ("reinstall MedGAN: the built-in weights ship with it" if source == "builtin"
                   else f"delete {folder} and install the model again (`medgan import <model folder> --replace`)")
            try:
                card = load_card(folder, source=source)
                verify_weights(card)
            except ModelError as exc:
                findings.append(Finding("model", folder.name, "fail", f"{source}, {folder}: {exc}", fix))
                continue
            note = ", overrides the built-in model" if source == "user" and card.id in builtin_ids else ""
            builtin_ids.update([card.id] if source == "builtin" else [])
            findings.append(Finding("model", card.id, "ok", f"{card.version:<7} {card.task:<10} SHA-256 verified  "
                                    f"{source}: {folder}{note}"))
    if not any(f.section == "model" for f in findings):
        findings.append(Finding("model", "models", "warn", f"no models installed (looked in {builtin_models_dir()} "
                                f"and {user})", "`medgan train --recipe <id> --export <user models folder>` or "
                                "`medgan import`"))
    return findings


def diagnose() -> list[Finding]:
    """Every check, in report order. Never raises for what it finds: a problem is a finding."""
    requires_python, reqs = project_requirements()
    findings = [check_python(requires_python)]
    modules = {}
    for req in reqs:
        finding, modules[req.distribution] = check_package(req)
        findings.append(finding)
    if modules.get("torch") is not None:
        findings += check_devices(modules["torch"])
    else:
        findings.append(Finding("device", "devices", "info", "unknown until torch is installed"))
    if all(modules.get(name) is not None for name in ("torch", "safetensors")):
        findings += check_models()
    else:
        findings.append(Finding("model", "models", "missing", "cannot verify the models without torch and "
                                "safetensors", "install the missing packages above"))
    return findings


# --- report ----------------------------------------------------------------------------------------------------
_TITLES = {"python": "Python", "package": "Packages (minimums from pyproject.toml)", "device": "Devices",
           "models": "Models", "model": "Models"}
_MARK = {"ok": "ok", "info": "--", "warn": "WARN", "missing": "MISSING", "fail": "FAIL"}


def format_report(findings: list[Finding]) -> str:
    from . import __version__

    lines, title = [f"MedGAN {__version__} doctor"], ""
    for f in findings:
        if _TITLES[f.section] != title:
            title = _TITLES[f.section]
            lines += ["", title]
        lines.append(f"  {_MARK[f.status]:<8} {f.name:<22} {f.detail}")
        if f.fix:
            lines.append(f"  {'':<8} {'':<22} -> {f.fix}")
    problems = [f for f in findings if f.status in PROBLEMS]
    lines.append("")
    lines.append("Ready to run." if not problems else
                 f"{len(problems)} problem(s): " + "; ".join(f"{f.name} ({_MARK[f.status]})" for f in problems)
                 + ". Fix them with the commands above.")
    return "\n".join(lines)


def run_doctor(as_json: bool = False, out: Callable[[str], Any] = print) -> int:
    """Print the report (or JSON ``{"findings": [...], "problems": n}``); 1 if anything required is wrong."""
    findings = diagnose()
    problems = sum(f.status in PROBLEMS for f in findings)
    if as_json:
        out(json.dumps({"findings": [asdict(f) for f in findings], "problems": problems}, indent=2))
    else:
        out(format_report(findings))
    return 1 if problems else 0
