"""The benchmark scripts' shared pieces (benchmarks/common.py, benchmarks/run_all.py); their timings are not tested."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import common
        import run_all

        yield common, run_all
    finally:
        sys.path.remove(str(BENCH))


def test_every_installed_model_gets_the_second_inputs_its_task_needs(bench_modules):
    """floor.py and warmstart.py run every installed model in one loop: the lesion model needs a mask."""
    common, _ = bench_modules
    from MedGANLogic.models import registry
    from MedGANLogic.tasks import TASKS

    cards = registry.list_models()
    assert any(TASKS.get(c.task).inputs for c in cards), "no installed model needs a second input"
    for card in cards:
        volume, _ = common.standard_input(card, quick=True)
        extra = common.task_inputs(card, volume)
        assert sorted(extra) == sorted(TASKS.get(card.task).inputs)
        for mask in extra.values():
            assert mask.shape == volume.shape and mask.spacing == volume.spacing
            assert 0 < int(np.count_nonzero(mask.array)) < mask.array.size


def test_keep_takes_the_other_sections_from_the_results_there_and_marks_their_date(bench_modules):
    _, run_all = bench_modules
    text = "\n".join([
        "# MedGAN benchmarks", "", "Made by `make bench` (benchmarks/run_all.py) on 2026-11-25 09:46 UTC in 5.0 min.",
        "", "## Targets (issue 7)", "", "| t |", "",
        f"## {run_all.TITLES['floor']}", "", "floor table", "",
        f"## {run_all.TITLES['adapt']} (kept from the run of 2026-11-20 08:00 UTC)", "", "adapt table", "",
        "## A sub-heading of adapt's markdown", "", "more adapt", "",
        "## Wall time per script", "", "| script | seconds | exit | other processes' CPU |",
        "|---|---|---|---|", "| floor.py | 27.1 | 1 | 1% |", "| adapt.py | 1011.1 | 0 | 0% |", ""])
    date, sections, walls = run_all.split_results(text)
    assert date == "2026-11-25 09:46"
    assert sorted(sections) == ["adapt", "floor"]
    assert sections["floor"].startswith(f"## {run_all.TITLES['floor']} (kept from the run of 2026-11-25 09:46 UTC)")
    assert "floor table" in sections["floor"] and "Targets" not in sections["floor"]
    # a section kept once keeps the date of the run that made it, and its sub-headings stay with it
    assert sections["adapt"].startswith(f"## {run_all.TITLES['adapt']} (kept from the run of 2026-11-20 08:00 UTC)")
    assert "more adapt" in sections["adapt"] and "Wall time" not in sections["adapt"]
    assert walls["floor"] == ["floor.py", "27.1", "1", "1%"] and walls["adapt"][1] == "1011.1"


def test_a_script_over_its_time_limit_is_stopped_and_reported(tmp_path):
    """run_all --timeout (for a GPU lent for minutes): the script is stopped, the run fails and RESULTS.md says why."""
    import os
    import subprocess

    env = dict(os.environ, MEDGAN_BENCH_OUT=str(tmp_path))
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--device", "cpu", "--quick", "--only",
                           "startup", "--timeout", "0.05"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    results = (tmp_path / "RESULTS.md").read_text()
    assert "stopped by --timeout after 0.05 s" in results and "| startup.py ran" in results


def test_collect_writes_results_from_the_json_a_stopped_run_left(tmp_path):
    """benchmarks/collect.py: sections and targets from each JSON found, the scripts without one named."""
    import json

    sys.path.insert(0, str(BENCH))
    try:
        import collect
    finally:
        sys.path.remove(str(BENCH))
    machine = {"torch": "2.11.0+cu130", "python": "3.12.3", "cpu_count": 16, "cpu": "Xeon", "cuda": "NVIDIA H200"}
    (tmp_path / "memory.json").write_text(json.dumps({
        "device_name": "NVIDIA H200 (CUDA 13.0)", "machine": machine, "markdown": "memory table",
        "targets": [{"target": "memory: peak extra <= 3x", "value": "2.92x", "met": True}]}))
    text = collect.collect(tmp_path, "stopped early")
    assert "Device: NVIDIA H200 (CUDA 13.0)" in text and "stopped early" in text
    assert "| memory: peak extra <= 3x | 2.92x    | yes |" in text and "memory table" in text
    assert "Not measured here: floor, peers, scaling, warmstart, startup, adapt." in text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no benchmark JSON"):
        collect.collect(empty)
