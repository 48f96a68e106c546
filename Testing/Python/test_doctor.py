"""`medgan doctor`: versions, devices, models verified, and what to install when something is missing."""

import json
import sys

import pytest
import torch
from conftest import tiny_card

from MedGANLogic.cli import main
from MedGANLogic.doctor import CPU_TORCH, parse_requirement, project_requirements, version_tuple


def _doctor(capsys, *args):
    code = main(["doctor", *args])
    return code, capsys.readouterr().out


def test_requirements_come_from_pyproject():
    requires_python, reqs = project_requirements()
    by_name = {r.distribution: r for r in reqs}
    assert requires_python == ">=3.10"
    assert by_name["torch"].minimum == "2.1" and by_name["torch"].extra is None
    assert by_name["nilearn"].extra == "data" and by_name["scikit-image"].module == "skimage"
    assert "pytest" not in by_name  # the test extra is for developers, not users
    assert parse_requirement('scikit-image>=0.21; extra == "data"').extra == "data"
    assert version_tuple("2.13.0+cpu") == (2, 13, 0) and version_tuple("2.13.0+cpu") >= version_tuple("2.1")


def test_without_tomllib_the_requirements_are_read_alike(monkeypatch):
    """Python < 3.11 (Slicer's Python) has no tomllib: the pattern reader finds the same requirements."""
    expected = project_requirements()
    monkeypatch.setitem(sys.modules, "tomllib", None)
    assert project_requirements() == expected


def test_without_a_gpu_the_report_says_so_and_every_model_is_verified(model_dir, make_model, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a machine without a GPU sees
    make_model(tiny_card())
    code, out = _doctor(capsys)
    assert code == 0, out
    assert "no CUDA device" in out and "bf16:" in out and f"torch {torch.__version__}" in out
    assert "test-t1-to-t2" in out and "SHA-256 verified" in out
    assert str(model_dir) in out and "$MEDGAN_MODELS_DIR" in out
    assert out.rstrip().endswith("Ready to run.")


def test_the_builtin_models_verify(capsys):
    code, out = _doctor(capsys, "--json")
    findings = json.loads(out)["findings"]
    models = {f["name"]: f for f in findings if f["section"] == "model"}
    assert {"mr-t1-to-t2", "ldct-denoise", "brain-anomaly-t2"} <= set(models)
    assert all(f["status"] == "ok" and "builtin" in f["detail"] for f in models.values())
    assert code == 0


def test_a_corrupted_user_model_is_flagged_and_the_exit_code_says_so(make_model, capsys):
    make_model(tiny_card())
    broken = make_model(tiny_card("test-broken"))
    weights = broken.weights_path
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte: the file still loads, only the checksum can tell
    weights.write_bytes(bytes(data))
    code, out = _doctor(capsys)
    assert code == 1
    line = next(s for s in out.splitlines() if "test-broken" in s)
    assert line.split()[0] == "FAIL" and "SHA-256" in line and "user" in line
    assert "install the model again" in out and "1 problem(s): test-broken (FAIL)" in out
    assert next(s for s in out.splitlines() if "test-t1-to-t2" in s).split()[0] == "ok"


def test_a_missing_optional_package_is_reported_with_its_install_command(model_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)  # `import nilearn` now raises ImportError
    code, out = _doctor(capsys)
    line = next(s for s in out.splitlines() if " nilearn " in s)
    assert line.split()[0] == "WARN" and "not installed" in line and "optional" in line
    assert "pip install 'nilearn>=0.10'" in out
    assert code == 0  # optional: MedGAN runs without it


@pytest.mark.parametrize("module, command", [("monai", "pip install 'monai>=1.3'"),
                                             ("torch", f"pip install {CPU_TORCH}")])
def test_a_missing_required_package_fails_with_its_install_command(model_dir, capsys, monkeypatch, module, command):
    monkeypatch.setitem(sys.modules, module, None)
    code, out = _doctor(capsys)
    assert code == 1
    assert next(s for s in out.splitlines() if f" {module} " in s).split()[0] == "MISSING"
    assert command in out


def test_a_package_older_than_the_minimum_is_reported(model_dir, capsys, monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.2.0" if name == "monai" else real(name))
    code, out = _doctor(capsys)
    assert code == 1 and "1.2.0 is too old (needs >=1.3)" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_each_gpu_is_listed_with_name_memory_and_bf16(capsys):
    code, out = _doctor(capsys)
    for index in range(torch.cuda.device_count()):
        line = next(s for s in out.splitlines() if f"cuda:{index}" in s)
        assert torch.cuda.get_device_name(index) in line and "GiB" in line and "bf16:" in line
    assert code == 0
