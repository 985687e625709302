"""The phase engine: the one resume mechanism of the project.

A stage's work is a sequence of **phases**. A phase is either a map over tasks through the
executor (:meth:`Phases.map`: one worker object per worker process, one task dict per call)
or one step on the driver (:meth:`Phases.step`). Each task returns a JSON-able result dict
and lists the files it wrote in ``result["files"]`` (``curate.shardio.file_info`` dicts).

The engine stores every finished task's result as a marker ``<marker dir>/<name>.json``
together with its **key**: a hash of the stage's key (config hash and, for global stages, the
input checksums), the phase name, the phase's own ``key`` argument, the task itself and the
results of every earlier phase of this stage. On a rerun a task is skipped when its marker
has the same key and every file it lists still has its recorded size and checksum; anything
else is redone. Writes are atomic (the workers write through ``curate.shardio``; markers are
written by the driver after the result arrives), so a kill at any point leaves either a
finished task with its marker or work that is redone.

Map and source stages are one phase (``shards``, markers in ``_shards/``) run by the runner;
global stages (dedup, train-lm, perplexity, mix, ...) call ``ctx.phases.map`` / ``step``
from their ``run``. Work files go under ``ctx.work_dir`` (``<stage>/_work``), removed by the
runner when the stage has finished.

A run on a storage URI (:mod:`curate.storage`) gives the engine its store: each task's files,
then its marker, are uploaded as soon as the marker is written, and the stage folder is mirrored
up at the end of each phase. Keys see mirror paths as the run's URI, so a run resumed from
another mirror (another machine) finds its markers.

Fault injection for tests: ``CURATE_FAULT=kill:<stage>:<phase>:<k>`` kills the process
(SIGKILL) just before the ``k``-th result (0-based) of that phase is recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ShardError
from .shardio import atomic_write_json, file_changed

VOLATILE = ("seconds", "timings")


def stable_hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, separators=(",", ":"), default=str).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:24]


def _stable_part(result: Any) -> Any:
    """A result without its timing fields (they differ between an interrupted run and not)."""
    if isinstance(result, dict):
        return {k: _stable_part(v) for k, v in result.items() if k not in VOLATILE}
    if isinstance(result, list):
        return [_stable_part(v) for v in result]
    return result


def _relativise(result: dict, base: Path) -> dict:
    files = result.get("files")
    if not files:
        return result
    out = []
    for f in files:
        p = Path(f["path"])
        try:
            rel = p.resolve().relative_to(base.resolve())
            f = dict(f, path=str(rel))
        except ValueError:
            pass
        out.append(f)
    return dict(result, files=out)


class Phases:
    """The phases of one stage run (``ctx.phases``).

    Args:
        stage_dir: the stage directory (relative file paths in markers resolve against it).
        stage_key: the stage's key (config hash and, for global stages, input digest).
        executor: the run's executor (``curate.executors.Executor``).
        stage_name: the stage's name in the pipeline (progress bars, messages, fault hook).
        log: where one-line notes go (resumed phases).
        store: the run's storage (``curate.storage.RemoteRun``) or None for a local run.
    """

    def __init__(self, stage_dir: Path, stage_key: str, executor: Any, stage_name: str, log: Callable = print,
                 store: Any = None):
        self.stage_dir = Path(stage_dir)
        # the run's storage (curate.storage.RemoteRun for a run on a URI): gets every committed
        # task's files and marker, and the stage folder at the end of each phase
        self.store = store
        self.work_dir = self.stage_dir / "_work"
        self.executor = executor
        self.stage_name = stage_name
        self.log = log
        self._chain = stage_key
        self.timings: dict[str, float] = {}
        self.skipped: dict[str, int] = {}
        fault = os.environ.get("CURATE_FAULT", "")
        self._fault = fault.split(":") if fault.startswith("kill:") else None

    # ------------------------------------------------------------------ markers
    def _marker_path(self, marker_dir: Path, name: str) -> Path:
        return marker_dir / f"{name}.json"

    def _load(self, path: Path, key: str) -> dict | None:
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(m, dict) or m.get("key") != key or "result" not in m:
            return None
        for f in m["result"].get("files") or []:
            why = file_changed(f, self.stage_dir)
            if why is not None:
                self.log(f"[{self.stage_name}] {why}: redoing that task")
                return None
        return m["result"]

    def _record(self, phase: str, k: int, path: Path, key: str, result: dict) -> dict:
        if not isinstance(result, dict):
            raise ShardError(f"stage {self.stage_name}: phase {phase} returned {type(result).__name__}, not a dict")
        if self._fault and self._fault[1:3] == [self.stage_name, phase] and int(self._fault[3]) == k:
            os.kill(os.getpid(), signal.SIGKILL)
        result = _relativise(result, self.stage_dir)
        atomic_write_json(path, {"key": key, "result": result})
        if self.store is not None:
            self.store.push([self.file(f) for f in result.get("files") or []] + [path])
        return result

    def _logical(self, obj: Any) -> Any:
        return self.store.logical(obj) if self.store is not None else obj

    def _phase_done(self) -> None:
        if self.store is not None:
            self.store.sync(self.stage_dir)

    def _phase_key(self, name: str, key: Any) -> str:
        return stable_hash(self._chain, name, key)

    def _advance(self, pkey: str, results: list[dict]) -> None:
        self._chain = stable_hash(pkey, [_stable_part(self._logical(r)) for r in results])

    # ------------------------------------------------------------------ phases
    def map(
        self,
        name: str,
        worker_cls: type,
        init_args: tuple,
        tasks: list[dict],
        key: Any = None,
        desc: str | None = None,
        marker_dir: Path | None = None,
        marker_names: list[str] | None = None,
    ) -> list[dict]:
        """Run ``worker_cls(*init_args)(task)`` for every task not already finished.

        Returns the results in task order (stored ones for skipped tasks).
        ``marker_dir``/``marker_names`` place the markers (default ``_work/<name>/NNNNN``).
        """
        t0 = time.perf_counter()
        pkey = self._phase_key(name, key)
        mdir = marker_dir or (self.work_dir / name)
        names = marker_names or [f"{i:05d}" for i in range(len(tasks))]
        results: list[dict | None] = [None] * len(tasks)
        keys = [stable_hash(pkey, self._logical(t)) for t in tasks]
        todo = []
        for i in range(len(tasks)):
            r = self._load(self._marker_path(mdir, names[i]), keys[i])
            if r is None:
                todo.append(i)
            else:
                results[i] = r
        done = len(tasks) - len(todo)
        self.skipped[name] = done
        if done:
            what = f"resuming: {done} of {len(tasks)} shards already done" if name == "shards" else (
                f"{name}: {done} of {len(tasks)} tasks already done, resuming")
            self.log(f"[{self.stage_name}] {what}")
        recorded = 0
        label = desc or (f"{self.stage_name}: {name}" if name != "shards" else self.stage_name)
        for j, res in self.executor.map(worker_cls, init_args, [tasks[i] for i in todo], desc=label):
            i = todo[j]
            results[i] = self._record(name, recorded, self._marker_path(mdir, names[i]), keys[i], res)
            recorded += 1
        self._advance(pkey, results)  # type: ignore[arg-type]
        self._phase_done()
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        return results  # type: ignore[return-value]

    def step(self, name: str, fn: Callable[[], dict], key: Any = None) -> dict:
        """Run ``fn()`` on the driver unless this step already finished with the same key."""
        t0 = time.perf_counter()
        pkey = self._phase_key(name, key)
        path = self._marker_path(self.work_dir, name)
        res = self._load(path, pkey)
        if res is not None:
            self.skipped[name] = 1
            self.log(f"[{self.stage_name}] {name}: already done, resuming")
        else:
            self.skipped[name] = 0
            res = self._record(name, 0, path, pkey, fn())
        self._advance(pkey, [res])
        self._phase_done()
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)
        return res

    def file(self, result_file: dict) -> Path:
        """The absolute path of a file listed in a result (paths are stored relative)."""
        p = Path(result_file["path"])
        return p if p.is_absolute() else self.stage_dir / p
