"""The README's shell commands run as written.

Every command of the README's ```bash / ```sh blocks is either run here, as a process in a scratch folder (with
the few input files it names made from the sample data), or listed in NOT_RUN with the reason. A command in
neither fails the test, so a new README command has to be classified when it is written.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO

SAMPLE = REPO / "Resources" / "SampleData"
# Input files the README's commands name, made from the sample data in the scratch folder.
INPUTS = {"scan.nii.gz": "sample_T1w.nrrd", "t1.nii.gz": "sample_T1w.nrrd", "t2.nii.gz": "sample_T2w.nrrd",
          "mask.nii.gz": "sample_lesion_mask.nrrd"}
# Command (its beginning) -> why it is not run here.
NOT_RUN = {
    "make demo": "covered by test_demo.py and test_cli.py's demo tests, which run the same `medgan demo` code",
    "make test": "is this test suite",
    "medgan demo": "covered by test_demo.py (every model takes about 40 s here)",
    "medgan run --task denoise --input ldct/": "needs a CUDA GPU (--device cuda:0) and a low-dose CT DICOM folder",
    "medgan run --task denoise --adapt": "fits for up to 90 s to a PET file the README does not ship; test_adapt.py "
                                         "runs --adapt through the command line with a few steps",
    "medgan run --task superres --adapt": "fits for up to 120 s to a thick-slice file the README does not ship; "
                                          "test_adapt.py runs --adapt and --save-fit through the command line",
    "medgan train --recipe": "trains a model for up to half an hour (test_train.py trains tiny configs through the "
                             "same command)",
    "medgan train --config my.yaml": "needs your own image folders",
    "medgan train --resume": "needs an earlier training run (test_train.py resumes one through the command line)",
    "torchrun": "needs several processes and GPUs (test_train_ddp.py runs DDP on the CPU)",
    "medgan augment": "needs folders of your images and labels (test_lesion.py runs `augment` on folders it writes)",
    "medgan import latest_net_G.pth": "needs a pytorch-CycleGAN-and-pix2pix checkpoint (test_import.py converts ones "
                                      "it writes in that layout)",
}


def readme_commands() -> list[str]:
    """Commands of the README's bash/sh blocks: comments dropped, backslash continuations joined."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = shlex.split(line, comments=True)
            if command:
                commands.append(shlex.join(command))
    return commands


def _reason(command: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if command.startswith(start)), None)


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] in ("medgan", ".venv/bin/medgan"):
        return [sys.executable, "-m", "MedGANLogic.cli", *words[1:]]
    raise AssertionError(f"README command {command!r} is neither run by this test nor listed in NOT_RUN")


def test_every_readme_command_is_run_or_has_a_reason():
    commands = readme_commands()
    assert "medgan doctor" in commands and "medgan models" in commands  # the parser finds the blocks
    for command in commands:
        if _reason(command) is None:
            _argv(command)  # raises for a command this test does not know how to run
    for start in NOT_RUN:  # no stale reasons: each still matches a README command
        assert any(c.startswith(start) for c in commands), f"NOT_RUN lists {start!r}, which the README no longer has"


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               MEDGAN_MODELS_DIR=str(tmp_path / "models"))  # a scratch user folder: nothing lands in ~/.medgan
    from MedGANLogic.io import read_volume, write_volume

    for name, sample in INPUTS.items():
        write_volume(read_volume(SAMPLE / sample), tmp_path / name)
    ran = []
    for command in readme_commands():
        if _reason(command):
            continue
        proc = subprocess.run(_argv(command), cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"`{command}` failed (exit {proc.returncode}): {proc.stderr[-1500:]}"
        ran.append(command)
    assert (tmp_path / "t2_synthetic.nii.gz").is_file() and (tmp_path / "candidates.nii.gz").is_file()
    assert {"medgan models", "medgan doctor", "medgan info scan.nii.gz", "medgan train --list-recipes"} <= set(ran)
