"""All-or-nothing file writes: stage next to the target, rename into place, clean what killed runs left.

A write puts its files in a hidden stage folder ``.medgan-<pid>-<8 random characters>`` inside each target
folder (the same file system, so a rename is atomic), then renames them into place. Several files (an output
and its mask, a NIfTI and its JSON sidecar, an MHD header and its raw data) are committed together: a file
that existed before is kept aside (a hard link in the stage) until every rename has succeeded, and is put
back if one fails. So a failed write leaves every old file as it was and no new one.

A process killed while writing (SIGKILL, power cut) leaves its stage behind. The next write to that folder
removes stages that are certainly abandoned: MedGAN's exact name pattern, and either idle for
:data:`STALE_AFTER_S` or idle for :data:`DEAD_OWNER_IDLE_S` with their owning process gone. A concurrent
writer's stage is never touched: it is alive and busy.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGE_PREFIX = ".medgan-"
# tempfile.mkdtemp's random part: 8 characters of [a-z0-9_]
STAGE_NAME = re.compile(r"^\.medgan-(?P<pid>\d+)-[a-z0-9_]{8}$")
# what versions before this one named their stages: .medgan-<output file name>.<8 random characters>
LEGACY_STAGE_NAME = re.compile(r"^\.medgan-.+\.(?:nii|nii\.gz|nrrd|mha|mhd)\.[a-z0-9_]{8}$")
STALE_AFTER_S = 24 * 3600.0  # idle this long: abandoned, whoever made it (its PID may have been reused)
DEAD_OWNER_IDLE_S = 120.0  # idle this long and its process is gone: abandoned
_PREVIOUS = ".previous"  # inside a stage: hard links to the files a commit replaces, until it is done


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: rely on idle time only
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return True
    return True


def _idle_seconds(stage: Path, now: float) -> float:
    """Seconds since anything in the stage (the folder, its files, kept-aside files) last changed."""
    latest = stage.lstat().st_mtime
    for p in stage.rglob("*"):
        try:
            latest = max(latest, p.lstat().st_mtime)
        except OSError:
            continue
    return now - latest


def is_stale_stage(path: Path, now: float | None = None) -> bool:
    """True for a stage folder of MedGAN's that no live writer can still be using."""
    match = STAGE_NAME.match(path.name)
    if not (match or LEGACY_STAGE_NAME.match(path.name)) or path.is_symlink() or not path.is_dir():
        return False
    idle = _idle_seconds(path, time.time() if now is None else now)
    if idle >= STALE_AFTER_S:
        return True
    return bool(match) and idle >= DEAD_OWNER_IDLE_S and not _pid_alive(int(match["pid"]))


def remove_stale_stages(folder: Path) -> list[Path]:
    """Remove the abandoned stages in ``folder`` (see :func:`is_stale_stage`); return what was removed."""
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(STAGE_PREFIX)]
    except OSError:
        return removed
    for p in candidates:
        try:
            if is_stale_stage(p):
                shutil.rmtree(p)
                removed.append(p)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
    return removed


class StagedWrite:
    """The stages of one all-or-nothing write; use through :func:`staged_write`."""

    def __init__(self) -> None:
        self.stages: dict[Path, Path] = {}  # target folder -> its stage folder
        self.targets: list[Path] = []  # the files the caller asked for, in order

    def path_for(self, target: str | os.PathLike) -> Path:
        """Where to write ``target`` now; companion files written next to it are committed with it."""
        target = Path(target)
        folder = target.parent
        if folder not in self.stages:
            remove_stale_stages(folder)
            self.stages[folder] = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=folder))
        self.targets.append(target)
        return self.stages[folder] / target.name

    def _files(self) -> list[tuple[Path, Path]]:
        """(staged, final) pairs: companion files (raw data, sidecars) first, the files asked for last."""
        pairs = [(f, folder / f.name) for folder, stage in self.stages.items() for f in sorted(stage.iterdir())
                 if f.name != _PREVIOUS]
        return sorted(pairs, key=lambda pair: pair[1] in self.targets)

    def commit(self) -> None:
        done: list[tuple[Path, Path | None]] = []  # (final, kept-aside old file or None)
        try:
            for staged, final in self._files():
                kept = None
                if final.exists() or final.is_symlink():
                    kept = staged.parent / _PREVIOUS / final.name
                    kept.parent.mkdir(exist_ok=True)
                    try:
                        os.link(final, kept, follow_symlinks=False)
                    except OSError:  # no hard links here (some network shares): copy it aside instead
                        shutil.copy2(final, kept, follow_symlinks=False)
                os.replace(staged, final)
                done.append((final, kept))
        except BaseException:
            for final, kept in reversed(done):
                try:
                    if kept is None:
                        final.unlink()
                    else:
                        os.replace(kept, final)
                except OSError:
                    pass
            raise

    def discard(self) -> None:
        for stage in self.stages.values():
            shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def staged_write() -> Iterator[StagedWrite]:
    """Write files all or nothing::

        with staged_write() as stage:
            write_a(stage.path_for(folder / "a.nrrd"))
            write_b(stage.path_for(other_folder / "b.nii.gz"))
        # here both exist, or (on an exception) neither changed
    """
    stage = StagedWrite()
    try:
        yield stage
        stage.commit()
    finally:
        stage.discard()
