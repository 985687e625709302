"""Named exceptions. The CLI turns each into one clear line and a non-zero exit code."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path


class CurateError(Exception):
    """Base class for every error the CLI reports as one line."""


class ConfigError(CurateError):
    """A pipeline or stage configuration is invalid (unknown key, bad value, missing input)."""


class ConservationError(CurateError):
    """A stage lost or invented documents: input != kept + rejected."""


class ShardError(CurateError):
    """A shard could not be read or written, or its checksum does not match."""


class StageStateError(CurateError):
    """A finished stage on disk disagrees with the requested configuration."""


class WriteError(ShardError, OSError):
    """An output file could not be written (disk full, read-only file system, permissions).

    Also an ``OSError`` (``errno``, ``strerror``, ``filename`` = the output, never its temp
    file), so code that handles OSError still sees it; ``str()`` is the one line to show.
    """

    _HINTS = {
        28: "free space on that file system, or use a --run directory on another one",
        122: "the disk quota is exceeded: free space, or use a --run directory on another file system",
        30: "the file system is read-only: use a writable --run directory "
            "(curate inspect and curate sql still read a read-only run)",
        13: "check the permissions of the run directory, or use another --run directory",
        1: "check the permissions of the run directory, or use another --run directory",
    }

    def __str__(self) -> str:
        import errno as _errno

        code = _errno.errorcode.get(self.errno or 0)
        what = f"{self.strerror} ({code})" if code else str(self.strerror)
        hint = self._HINTS.get(self.errno or 0, "check the run directory's file system")
        return f"cannot write {self.filename}: {what}: {hint}"


class ClusterError(CurateError):
    """The executor could not get the workers it needs (no resources, workers lost too often)."""


class TaskError(CurateError):
    """A task of an executor's ``map`` failed: an exception in the stage code, or its worker
    was lost more often than the retry limit allows.

    ``str(error)`` is the one line the CLI prints; ``traceback`` holds the worker-side
    traceback (written to the run's log by :meth:`write_log`).

    Attributes:
        stage: the map's description (stage name, or ``stage: phase``).
        task: the task's index (the shard index when the task names one), or None for a
            failure while the worker was being built.
        input: the task's input file, when the task names one.
        record: the record being processed, when the stage code says (an exception
            attribute ``record`` or a note added with ``add_note``).
        error: ``ExceptionType: message`` of the original error (first line only).
        traceback: the full traceback text, from the worker.
    """

    def __init__(self, stage: str, task: int | None, error: str, traceback: str = "",
                 input: str | None = None, record: str | None = None):
        self.stage, self.task, self.error, self.traceback = stage, task, error, traceback
        self.input, self.record = input, record
        where = f"stage {stage!r}" + (" (worker setup)" if task is None else f" task {task}")
        if input:
            where += f" (input {input})"
        if record:
            where += f" record {record}"
        super().__init__(f"{where}: {error}")

    def write_log(self, run_dir: str | Path) -> Path:
        """Write the line and the full traceback to ``<run_dir>/_logs/<UTC time>-<stage>.log``."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.stage).strip("-") or "stage"
        path = Path(run_dir) / "_logs" / f"{stamp}-{slug}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self}\n\n{self.traceback.rstrip()}\n", encoding="utf-8")
        return path
