"""The one task table: every list of tasks (CLI, card validation, outputs) reads it."""

import dataclasses

import pytest
from conftest import tiny_card

from MedGANLogic.cli import build_parser
from MedGANLogic.errors import MedGANError, ModelError
from MedGANLogic.models.card import validate_card
from MedGANLogic.tasks import TASKS, TaskSpec, get_task


def test_the_table_lists_every_task_once_in_order():
    assert TASKS.names() == ["synthesize", "denoise", "superres", "anomaly", "segment", "lesion"]
    for name, spec in TASKS.items():
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert callable(get_task(name).make_outputs)  # its module exists and makes outputs
    assert TASKS.get("anomaly") == TaskSpec("anomaly", "anomaly", "Anomaly map", "anomaly map", "anomaly_map",
                                            ("threshold", "smoothing_mm", "edge_mm", "detrend", "residual", "ensemble"))
    with pytest.raises(dataclasses.FrozenInstanceError):  # the table cannot be edited in place
        TASKS.get("denoise").label = "x"


def test_unknown_task_lists_the_table():
    with pytest.raises(MedGANError, match="Unknown task 'colorize'; known: synthesize, denoise, superres"):
        get_task("colorize")


def test_cli_choices_come_from_the_table():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("run", "models"):
        task_option = next(a for a in subcommands[command]._actions if a.dest == "task")
        assert list(task_option.choices) == TASKS.names()


def test_card_validation_reads_the_table(monkeypatch):
    with pytest.raises(ModelError, match="'task' must be one of synthesize, denoise, superres, anomaly, segment"):
        validate_card(tiny_card(task="colorize"))
    monkeypatch.setitem(TASKS._entries, "colorize", TaskSpec("colorize", "synthesis", "Colorize", "colorized",
                                                            "image"))
    validate_card(tiny_card(task="colorize"))  # a new row in the table is a task cards may name
