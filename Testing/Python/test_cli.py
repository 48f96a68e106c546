"""The `medgan` command: the contract other tools rely on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, tiny_card
from test_anomaly import anomaly_card

from MedGANLogic.cli import main
from MedGANLogic.io import read_volume, write_volume


def test_models_json_lists_installed(make_model, capsys):
    make_model(tiny_card())
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["id"] == "test-t1-to-t2" and rows[0]["task"] == "synthesize"
    assert rows[0]["modality_in"] == "MR T1w" and rows[0]["dims"] == "2d" and rows[0]["size_bytes"] > 0
    assert main(["models"]) == 0
    assert "test-t1-to-t2" in capsys.readouterr().out


def test_info_prints_geometry(oblique_volume, tmp_path, capsys):
    path = write_volume(oblique_volume, tmp_path / "v.nrrd")
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape_zyx"] == [12, 40, 36] and info["spacing_xyz_mm"] == [0.9, 1.1, 3.5]


def test_run_writes_output_with_provenance(make_model, oblique_volume, tmp_path, capsys):
    make_model(tiny_card())
    src = write_volume(oblique_volume, tmp_path / "t1.nii.gz")
    out = tmp_path / "t2.nrrd"
    code = main(["run", "--task", "synthesize", "--input", str(src), "--output", str(out), "--contrast", "T1w",
                 "--modality", "MR", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    vol = read_volume(out)
    assert vol.metadata["provenance"]["model"] == "test-t1-to-t2" and vol.same_geometry(oblique_volume, atol=1e-5)
    assert "model=test-t1-to-t2" in capsys.readouterr().out
    # the file says what it is: read back, it is a synthetic MR T2w (from the provenance in its header)
    assert vol.metadata["synthetic"] and (vol.metadata["modality"], vol.metadata["contrast"]) == ("MR", "T2w")


@pytest.mark.parametrize("args, message", [
    (["--input", "{tmp}/missing.nii.gz"], "not found"),
    (["--input", "{src}", "--model", "nope"], "Unknown model"),
    (["--input", "{src}", "--device", "tpu"], "Unknown device"),
    (["--input", "{src}", "--output", "{tmp}/out.png"], "Cannot write"),
    (["--input", "{src}", "--output", "{tmp}/no/such/dir/out.nrrd"], "does not exist"),
])
def test_run_errors_are_one_line_and_write_nothing(make_model, oblique_volume, tmp_path, capsys, args, message):
    make_model(tiny_card())
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    before = set(tmp_path.iterdir())
    full = ["run", "--task", "synthesize", "--output", str(tmp_path / "out.nrrd")]
    full += [a.format(tmp=tmp_path, src=src) for a in args]
    assert main(full) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("medgan run: error:")
    assert set(tmp_path.iterdir()) == before


def test_run_failure_during_inference_leaves_no_file(make_model, oblique_volume, tmp_path, capsys):
    make_model(tiny_card())
    nan = oblique_volume.array.copy()
    nan[0, 0, 0] = float("nan")
    src = write_volume(oblique_volume.with_array(nan), tmp_path / "t1.nrrd")
    assert main(["run", "--task", "synthesize", "--input", str(src), "--output", str(tmp_path / "o.nrrd")]) == 1
    assert "NaN" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "t1.nrrd"]


def test_console_script_runs_as_a_process(tmp_path):
    exe = REPO / ".venv" / "bin" / "medgan"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "MedGANLogic.cli"]
    proc = subprocess.run(cmd + ["info", str(tmp_path / "missing.nrrd")], capture_output=True, text=True)
    assert proc.returncode == 1 and "not found" in proc.stderr and proc.stderr.count("\n") == 1


def test_demo_without_models_checks_io_and_exits_0(model_dir, tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "I/O check passed on 8 sample volumes" in out and "No trained models" in out


def test_demo_runs_installed_models_on_the_sample(make_model, tmp_path, capsys):
    make_model(tiny_card())  # a T1w -> T2w model: the demo must pick the sample T1w for it
    assert main(["demo", "--output", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    out_vol = read_volume(tmp_path / "demo" / "test-t1-to-t2.nii.gz")
    sample = read_volume(REPO / "Resources" / "SampleData" / "sample_T1w.nrrd")
    assert out_vol.same_geometry(sample, atol=1e-5)
    from PIL import Image

    montage = Image.open(tmp_path / "demo" / "montage.png")
    assert montage.width >= 1200 and montage.height > 2 * sample.shape[1]  # 2 px per mm, 2 mm voxels
    row, = json.loads((tmp_path / "demo" / "montage.json").read_text())["rows"]
    assert row["panels"] == ["input: T1w", "output: synthetic T2w", "reference: acquired T2w"]
    assert row["figure"].startswith("no figure: evaluation.json has no results for test-t1-to-t2")
    assert "sample_T1w.nrrd" in capsys.readouterr().out


def test_demo_gives_each_model_the_sample_that_fits_its_input():
    """Through-plane SR gets the thick-slice T2w, in-plane SR the k-space-truncated one, denoising the low-dose
    CT, synthesis the plain contrast."""
    from types import SimpleNamespace

    from MedGANLogic.demo import load_manifest, pick_sample

    entries = load_manifest()

    def card(task, modality, contrast=None, scale=(1, 1, 1)):
        return SimpleNamespace(task=task, input={"modality": modality, "contrast": contrast}, scale_factor=scale)

    assert pick_sample(card("superres", "MR", "T2w", (2, 1, 1)), entries)["name"] == "T2w_thick"
    assert pick_sample(card("superres", "MR", "T2w", (1, 2, 2)), entries)["name"] == "T2w_lowres_inplane"
    assert pick_sample(card("denoise", "CT"), entries)["name"] == "CT_lowdose_25"
    assert pick_sample(card("synthesize", "CT"), entries)["name"] == "CT"
    assert pick_sample(card("synthesize", "MR", "T2w"), entries)["name"] == "T2w"
    assert pick_sample(card("segment", "MR", "PD"), entries) is None


# --- bad input (issue 13) --------------------------------------------------------------------------------------
@pytest.mark.parametrize("link", ["same path", "symlink", "hardlink"])
def test_run_refuses_to_write_over_its_input(make_model, oblique_volume, tmp_path, capsys, link):
    make_model(tiny_card())
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    before = src.read_bytes()
    out = {"same path": src, "symlink": tmp_path / "alias.nrrd", "hardlink": tmp_path / "twin.nrrd"}[link]
    if link == "symlink":
        out.symlink_to(src)
    elif link == "hardlink":
        os.link(src, out)
    code = main(["run", "--task", "synthesize", "--input", str(src), "--output", str(out), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "is the input" in err and len(err.splitlines()) == 1
    assert src.read_bytes() == before


def test_run_refuses_clashing_outputs(make_model, oblique_volume, tmp_path, capsys):
    make_model(anomaly_card("tiny-anomaly", threshold=0.05))
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    out = tmp_path / "map.nrrd"
    code = main(["run", "--task", "anomaly", "--input", str(src), "--output", str(out), "--mask-output", str(out),
                 "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "same file" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_failed_mask_write_keeps_the_existing_outputs(make_model, oblique_volume, tmp_path, capsys, monkeypatch):
    import SimpleITK as sitk

    make_model(anomaly_card("tiny-anomaly", threshold=0.05))
    src = write_volume(oblique_volume, tmp_path / "t1.nrrd")
    out, mask = tmp_path / "map.nrrd", tmp_path / "mask.nrrd"
    out.write_bytes(b"yesterday's map")
    real = sitk.WriteImage

    def fail_on_mask(image, path, *args, **kwargs):
        if Path(path).name.startswith("mask"):
            raise OSError("no space left on device")
        return real(image, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", fail_on_mask)
    code = main(["run", "--task", "anomaly", "--input", str(src), "--output", str(out), "--mask-output", str(mask),
                 "--device", "cpu"])
    assert code == 1 and "no space" in capsys.readouterr().err
    assert out.read_bytes() == b"yesterday's map" and not mask.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nrrd", "models", "t1.nrrd"]


def test_info_names_the_dicom_series_it_reads_and_series_picks_another(tmp_path, capsys):
    from test_io import write_ct_series

    write_ct_series(tmp_path, np.zeros((4, 8, 8), np.int16), "1.2.3.4", "abdomen")
    write_ct_series(tmp_path, np.zeros((2, 8, 8), np.int16), "1.2.3.9", "scout")
    assert main(["info", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["shape_zyx"] == [4, 8, 8]
    warning = captured.err.strip()
    assert warning.startswith("medgan info: warning:") and len(warning.splitlines()) == 1
    assert "1.2.3.9 (2 slices, scout)" in warning and "--series" in warning
    assert main(["info", str(tmp_path), "--json", "--series", "1.2.3.9"]) == 0
    assert json.loads(capsys.readouterr().out)["shape_zyx"] == [2, 8, 8]


def test_models_says_where_each_model_comes_from_and_flags_shadowing(make_model, model_dir, tmp_path, capsys,
                                                                    monkeypatch):
    from MedGANLogic.models.registry import save_model

    builtin = tmp_path / "builtin"
    monkeypatch.setenv("MEDGAN_BUILTIN_MODELS", str(builtin))
    from MedGANLogic.models import build_network

    card = tiny_card("test-t1-to-t2")
    net = build_network(card["architecture"]["name"], card["architecture"]["params"])
    save_model(builtin / "test-t1-to-t2", card, net.state_dict())
    save_model(builtin / "only-builtin", tiny_card("only-builtin"), net.state_dict())
    make_model(card)  # the user folder holds a model with the same id
    assert main(["models", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["test-t1-to-t2"]["source"] == "user"
    assert rows["test-t1-to-t2"]["folder"] == str(model_dir / "test-t1-to-t2")
    assert rows["test-t1-to-t2"]["shadows"] == str(builtin / "test-t1-to-t2")
    assert rows["only-builtin"]["source"] == "builtin" and rows["only-builtin"]["shadows"] is None
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {row.split()[0]: row for row in out.splitlines() if row.strip()}
    assert str(model_dir / "test-t1-to-t2") in rows["test-t1-to-t2"]
    assert "built-in" in rows["only-builtin"]
    assert "shadows the built-in model" in out and str(builtin / "test-t1-to-t2") in out


@pytest.mark.parametrize("case, message", [("nan.nii.gz", "NaN"), ("cut.nii", "truncated"),
                                           ("sheared.nrrd", "not orthonormal")])
def test_run_refuses_files_that_lie_about_their_voxels(make_model, oblique_volume, tmp_path, capsys, case, message):
    import SimpleITK as sitk

    from MedGANLogic.io import from_volume

    make_model(tiny_card())
    src = tmp_path / case
    if case == "nan.nii.gz":  # ITK alone reads NaN as 0 and the run went ahead on made-up voxels
        array = oblique_volume.array.copy()
        array[3, 20, 20] = np.nan
        write_volume(oblique_volume.with_array(array), src)
    elif case == "cut.nii":  # ITK alone reads the missing end as zeros
        whole = write_volume(oblique_volume, tmp_path / "whole.nii").read_bytes()
        src.write_bytes(whole[: len(whole) * 3 // 4])
    else:
        image = from_volume(oblique_volume)
        image.SetDirection((1, 0.3, 0, 0, 1, 0, 0, 0, 1))
        sitk.WriteImage(image, str(src))
    out = tmp_path / "out.nrrd"
    assert main(["run", "--task", "synthesize", "--input", str(src), "--output", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not out.exists()


# Runs `medgan ARGS` in a fresh interpreter, then prints the heavy packages it imported.
_IMPORT_PROBE = ("import sys\nfrom MedGANLogic.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
                 "except SystemExit as exc:\n    code = exc.code\n"
                 "print('IMPORTED', code, *sorted(m for m in ('torch', 'monai', 'safetensors') if m in sys.modules))")


@pytest.mark.parametrize("args", [["--help"], ["models"], ["models", "--json"], ["info", "{sample}"],
                                  ["train", "--help"]])
def test_quick_commands_start_without_torch(args):
    """`medgan --help`, `models` and `info` start in well under a second because they import neither torch nor
    MONAI (benchmarks/startup.py measures the time; this checks the cause)."""
    sample = REPO / "Resources" / "SampleData" / "sample_T1w.nrrd"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *[a.format(sample=sample) for a in args]],
                          capture_output=True, text=True, env=env, cwd=REPO)
    last = proc.stdout.strip().splitlines()[-1].split()
    assert last[:2] == ["IMPORTED", "0"], proc.stdout[-500:] + proc.stderr[-1500:]
    assert last[2:] == [], f"`medgan {' '.join(args)}` imported {last[2:]}"
