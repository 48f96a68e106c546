"""The panel's "Fit to this scan" choice: which tasks offer it, the widgets it enables, the run options it makes.

Plain Python (no Qt import, no parameter node), so it is tested outside the application: the parameter node's
values go in, ``slicer_bridge.run_on_node``'s keyword options come out. A fit picks its own start (no model from
the list: super-resolution of a scan without thick slices fine-tunes the installed in-plane model) and takes none
of the Advanced options of a trained model (tile overlap, batch size, slice axis, force, native grid): the engine
refuses them with a fit rather than ignoring them, so they are left out here.
"""

from __future__ import annotations

from typing import Any

from MedGANLogic.tasks import TASKS

#: The budget the panel starts with: 0, shown as "default", lets the engine choose per task and modality
#: (denoising CT and PET 300 s, ultrasound 120 s, MR 90 s; super-resolution 120 s; the box's ``specialValueText`` in
#: MedGAN.ui); the README's curves show what more buys.
DEFAULT_BUDGET_S = 0


def fit_tasks() -> tuple[str, ...]:
    """The tasks that can fit a network to the scan (those taking the engine's ``adapt`` option)."""
    return tuple(name for name in TASKS.names() if "adapt" in TASKS.get(name).options)


def fitting(task: str, adapt: bool) -> bool:
    """Whether a run of ``task`` with the checkbox ``adapt`` fits to the scan (the box counts for fit tasks only)."""
    return bool(adapt) and task in fit_tasks()


def enable_widgets(ui: Any, task: str, adapt: bool) -> None:
    """Enable the panel's widgets (``ui``: the widget variables of MedGAN.ui) for the checkbox's state: the box for
    the tasks that can fit; while fitting, the budget and "keep the fit", not the model list or the Advanced options
    of a model."""
    fit = fitting(task, adapt)
    ui.adaptCheckBox.enabled = task in fit_tasks()
    ui.adaptBudgetSpinBox.enabled = ui.keepFitCheckBox.enabled = fit
    ui.modelComboBox.enabled = ui.advancedCollapsibleButton.enabled = not fit


def fit_options(task: str, budget_s: float, opacity: float = 0.5) -> dict[str, Any]:
    """The options of a run that fits to the scan for ``budget_s`` seconds (then passes over the volume);
    ``budget_s`` 0 (the box's "default") leaves the budget to the engine: the task's and modality's default.

    Raises ValueError for a task that cannot fit or a budget that is negative or not a number.
    """
    if task not in fit_tasks():
        raise ValueError(f"Fit to this scan works for {' and '.join(fit_tasks())}, not {task!r}.")
    if not budget_s >= 0:
        raise ValueError(f"The fitting budget must be a positive number of seconds (or 0 for the default); got "
                         f"{budget_s!r}.")
    options: dict[str, Any] = {"adapt": True, "opacity": float(opacity)}
    if budget_s > 0:
        options["adapt_budget_s"] = float(budget_s)
    return options


def status_text(task_label: str, model_id: str, fit: bool, budget_s: float) -> str:
    """The status line while a run starts."""
    if fit:
        limit = f"up to {budget_s:g} s" if budget_s > 0 else "the default budget for this task and modality"
        return f"{task_label}: fitting a network to this scan ({limit}), then applying it..."
    return f"Running {task_label.lower()} with {model_id}..."


def keep_fits(batch: Any, keep: bool) -> str:
    """After a batch that fitted to its scans has finished: when ``keep`` (the panel's "Keep the fit as a model"
    box, as it was at Apply), save each fitted network in the user's model folder, where the model list and a
    later fit (``--model``) find it. Returns what to add to the status line ("" when nothing was kept)."""
    if not keep:
        return ""
    cards = batch.save_fits()
    if not cards:
        return ""
    where = cards[0].folder.parent
    return f" Fitted network kept as model {', '.join(c.id for c in cards)} (in {where})."
