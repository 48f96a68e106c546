"""`medgan simulate` and the bundled sample data: options, one-line refusals, all-or-nothing writes, bit-for-bit."""

import argparse
import builtins
import filecmp
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO

from MedGANLogic.io import read_volume
from MedGANLogic.simulate import cli as sim_cli
from MedGANLogic.simulate import make_subject

SAMPLE = REPO / "Resources" / "SampleData"


def _args(*argv):
    parser = argparse.ArgumentParser()
    sim_cli.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.mark.parametrize("options, message", [
    (["--contrasts", "T1w,T3w"], "Unknown contrast"),
    (["--contrasts", ","], "names no contrast"),
    (["--dose", "0"], "Dose fraction must be in (0, 1]"),
    (["--dose", "1.2"], "Dose fraction must be in (0, 1]"),
    (["--snr", "-3"], "SNR must be positive"),
    (["--snr", "0"], "SNR must be positive"),
    (["--contrasts", "T1w", "--dose", "0.25"], "add CT to --contrasts"),
    (["--thick", "5"], "--thick must be 2, 3 or 4"),
    (["--spacing", "0"], "spacing"),
    (["--lesions", "-1"], "--lesions"),
    (["--dose", "0.25", "--kernel", "bone"], "Unknown reconstruction kernel 'bone'; choose from ramp"),
    (["--dose", "0.25", "--kernel", "hann", "--kernel-cutoff", "2"], "Kernel cutoff must be in [0.1, 1]"),
    (["--kernel", "hann"], "add --dose"),
])
def test_bad_options_get_one_line_and_write_nothing(tmp_path, capsys, options, message):
    out = tmp_path / "out"
    assert sim_cli.main(_args("--subject", 1, "--output", out, *options)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("medgan simulate: error:")
    assert list(tmp_path.iterdir()) == []


def test_other_refusals(tmp_path, capsys):
    assert sim_cli.main(_args("--subject", -4, "--output", tmp_path / "o")) == 2
    assert "seeds must be >= 0" in capsys.readouterr().err
    assert sim_cli.main(_args("--subject", 1)) == 2
    assert "--output is required" in capsys.readouterr().err
    assert sim_cli.main(_args("--sample-data", tmp_path / "s", "--snr", 10)) == 2
    assert "takes no other option" in capsys.readouterr().err
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    assert sim_cli.main(_args("--subject", 1, "--output", afile, "--spacing", 8)) == 2
    assert "is a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_missing_nilearn_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_nilearn(name, *args, **kwargs):
        if name == "nilearn" or name.startswith("nilearn."):
            raise ImportError("No module named 'nilearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nilearn)
    for argv in (["--subject", 1, "--output", tmp_path / "out"], ["--sample-data", tmp_path / "sample"]):
        assert sim_cli.main(_args(*argv)) == 2
        err = capsys.readouterr().err.strip()
        assert "nilearn is not installed" in err and "pip install" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_module_entry_point_refuses_bad_dose():
    proc = subprocess.run([sys.executable, "-m", "MedGANLogic.simulate.cli", "--subject", "1", "--output",
                           "never-written", "--dose", "2"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "Dose fraction" in proc.stderr
    assert not (REPO / "never-written").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys, existing):
    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    from MedGANLogic import io as mio

    real_write, calls = mio.write_volume, []

    def failing_write(volume, path, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(volume, path, **kw)

    monkeypatch.setattr(mio, "write_volume", failing_write)
    argv = ["--subject", 2000, "--subject", 2001, "--output", out, "--spacing", 8, "--contrasts", "T1w,T2w"]
    assert sim_cli.main(_args(*argv)) == 2
    assert "disk full" in capsys.readouterr().err
    assert len(calls) == 3
    if existing:
        assert [p.name for p in out.iterdir()] == ["keep.txt"]  # hidden staging folder removed too
    else:
        assert list(tmp_path.iterdir()) == []


def test_writes_subjects_with_sidecar_licence_and_derived_volumes(tmp_path, capsys):
    out = tmp_path / "phantom"
    argv = ["--subject", 2002, "--output", out, "--spacing", 4, "--contrasts", "T2w,CT", "--dose", 0.25,
            "--thick", 2, "--kspace", 2, "--healthy", "--snr", 25]
    assert sim_cli.main(_args(*argv)) == 0
    names = sorted(p.name for p in out.iterdir())
    expected = {"sub-2002_T2w.nii.gz", "sub-2002_CT.nii.gz", "sub-2002_lesion_mask.nii.gz",
                "sub-2002_T2w_healthy.nii.gz", "sub-2002_CT_healthy.nii.gz", "sub-2002_CT_dose25.nii.gz",
                "sub-2002_CT_fulldose.nii.gz", "sub-2002_T2w_thick2.nii.gz", "sub-2002_CT_thick2.nii.gz",
                "sub-2002_T2w_kspace2.nii.gz", "sub-2002_CT_kspace2.nii.gz", "sub-2002.json", "LICENSE-MNI152.txt"}
    assert set(names) == expected
    printed = capsys.readouterr().out.split()
    assert len(printed) == len(expected)
    subject = make_subject(2002, spacing_mm=4.0, contrasts=("T2w", "CT"), snr=25)
    t2 = read_volume(out / "sub-2002_T2w.nii.gz")
    ref = subject.volumes["T2w"]
    assert t2.same_geometry(ref, atol=1e-4) and np.allclose(t2.array, ref.array)
    thick = read_volume(out / "sub-2002_T2w_thick2.nii.gz")
    assert np.allclose(thick.physical_extent(), ref.physical_extent(), atol=4.0) and thick.spacing[2] == 8.0
    record = json.loads((out / "sub-2002.json").read_text())
    assert record["subject_seed"] == 2002 and record["lesions"] == subject.lesions
    assert record["files"]["sub-2002_CT_dose25.nii.gz"]["dose_fraction"] == 0.25
    assert record["files"]["sub-2002_T2w.nii.gz"] == {"modality": "MR", "contrast": "T2w", "units": "a.u."}
    assert record["files"]["sub-2002_CT_dose25.nii.gz"]["kernel"] == "ramp"
    assert "Louis Collins" in (out / "LICENSE-MNI152.txt").read_text()
    # a soft kernel: recorded, and the same photons leave less noise than the ramp's
    soft = tmp_path / "soft"
    assert sim_cli.main(_args("--subject", 2002, "--output", soft, "--spacing", 4, "--contrasts", "CT", "--dose", 0.25,
                              "--kernel", "hann", "--kernel-cutoff", 0.8)) == 0
    entry = json.loads((soft / "sub-2002.json").read_text())["files"]["sub-2002_CT_dose25.nii.gz"]
    assert entry["kernel"] == "hann" and entry["cutoff"] == 0.8
    noise = [float(np.std((read_volume(d / "sub-2002_CT_dose25.nii.gz").array
                           - read_volume(d / "sub-2002_CT_fulldose.nii.gz").array)[subject.volumes["CT"].array > 0]))
             for d in (out, soft)]
    assert noise[1] < 0.6 * noise[0], noise
    # a second run adds to the folder and keeps what is there
    assert sim_cli.main(_args("--subject", 2003, "--output", out, "--spacing", 8, "--contrasts", "T1w")) == 0
    assert (out / "sub-2003_T1w.nii.gz").is_file() and (out / "sub-2002_T2w.nii.gz").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_sample_data_is_small_complete_and_licensed():
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    files = {f["file"]: f for f in manifest["files"]}
    assert {f["name"] for f in manifest["files"]} == {"T1w", "T2w", "FLAIR", "lesion_mask", "CT", "CT_lowdose_25",
                                                      "T2w_thick", "T2w_lowres_inplane"}
    on_disk = {p.name for p in SAMPLE.iterdir()}
    assert on_disk == set(files) | {"manifest.json", "LICENSE-MNI152.txt"}
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) < 10e6
    from MedGANLogic.simulate import SPLITS

    assert manifest["subject_seed"] in SPLITS["test"]
    assert "Permission to use, copy, modify, and distribute" in (SAMPLE / "LICENSE-MNI152.txt").read_text()
    ct = read_volume(SAMPLE / "sample_CT.nrrd")
    t2, thick = read_volume(SAMPLE / "sample_T2w.nrrd"), read_volume(SAMPLE / "sample_T2w_thick.nrrd")
    assert sitk.ReadImage(str(SAMPLE / "sample_CT.nrrd")).GetPixelID() == sitk.sitkInt16  # stored as int16 HU
    assert ct.array.min() >= -1100 and ct.array.max() > 1000
    assert thick.spacing[2] == 2 * t2.spacing[2] and np.allclose(thick.physical_extent(), t2.physical_extent())
    coarse = read_volume(SAMPLE / "sample_T2w_lowres_inplane.nrrd")
    assert coarse.spacing == (2 * t2.spacing[0], 2 * t2.spacing[1], t2.spacing[2])
    assert coarse.shape == (t2.shape[0], t2.shape[1] // 2, t2.shape[2] // 2)
    mask = read_volume(SAMPLE / "sample_lesion_mask.nrrd")
    assert sitk.ReadImage(str(SAMPLE / "sample_lesion_mask.nrrd")).GetPixelID() == sitk.sitkUInt8
    assert mask.same_geometry(t2) and set(np.unique(mask.array)) == {0, 1}
    assert files["sample_CT_lowdose_25.nrrd"]["dose_fraction"] == 0.25


@pytest.mark.slow
def test_sample_data_regenerates_bit_for_bit(tmp_path):
    out = tmp_path / "sample"
    assert sim_cli.main(_args("--sample-data", out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in SAMPLE.iterdir() if not p.name.startswith("."))
    match, mismatch, errors = filecmp.cmpfiles(SAMPLE, out, names, shallow=False)
    assert not mismatch and not errors, mismatch
