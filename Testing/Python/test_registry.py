"""The one Registry class: registration, lazy module import, unknown names are errors."""

from __future__ import annotations

import pytest

from MedGANLogic.registry import Registry


def test_register_and_get():
    reg: Registry[int] = Registry("widget")

    @reg.register("a")
    def a():
        return 1

    reg.add("b", 2)
    assert reg.get("a") is a and reg.get("b") == 2
    assert reg.names() == ["a", "b"] and "a" in reg and "c" not in reg and len(reg) == 2


def test_unknown_name_lists_known_ones():
    reg: Registry[int] = Registry("widget", error=ValueError)
    reg.add("a", 1)
    with pytest.raises(ValueError, match="Unknown widget 'zz'; known: a"):
        reg.get("zz")


def test_registering_another_object_under_a_taken_name_fails():
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    reg.add("a", 1)  # the same object again is fine (module re-import)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 2)


def test_missing_module_is_an_error_not_skipped():
    reg: Registry[int] = Registry("widget", package="MedGANLogic", modules=(".no_such_module",))
    with pytest.raises(ModuleNotFoundError):
        reg.get("a")
    with pytest.raises(ModuleNotFoundError):  # and again: a failed load is not remembered as done
        reg.names()


def test_modules_imported_on_first_lookup():
    reg: Registry[object] = Registry("task", package="MedGANLogic", modules=(".volume",))
    assert reg.names() == []  # importing the module registered nothing here, but it ran without error


def test_entries_are_listed_in_module_order_whichever_module_was_imported_first():
    reg: Registry[object] = Registry("section", package="pkg", modules=(".first", ".second"))
    reg._loaded = True  # the two modules below are imaginary; register as their imports would

    def late():
        pass

    late.__module__ = "pkg.second"
    reg.add("late", late)  # "pkg.second" imported first (e.g. by an earlier test)
    reg.add("early", object(), module="pkg.first")
    reg.add("other", object(), module="elsewhere")
    assert reg.names() == ["early", "late", "other"]
    assert [name for name, _ in reg.items()] == ["early", "late", "other"]
