"""Executors run per-task work on workers. This is the only module that imports ray.

``map(worker_cls, init_args, tasks, desc)`` constructs ``worker_cls(*init_args)`` once per
worker (models load once per worker, not per task), calls ``worker(task)`` for each task and
yields ``(task_index, result)`` in completion order. ``worker_cls`` must be a module-level
(picklable) class.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import ConfigError


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        disable=not sys.stderr.isatty() or bool(os.environ.get("CURATE_NO_PROGRESS")),
    )


class Executor:
    name = "base"

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers = workers

    def map(self, worker_cls: type, init_args: tuple, tasks: list, desc: str = "") -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalExecutor(Executor):
    """In-process, sequential: for tests and debugging (``workers`` is recorded, not used)."""

    name = "local"

    def map(self, worker_cls, init_args, tasks, desc=""):
        if not tasks:
            return
        worker = worker_cls(*init_args)
        with _progress() as prog:
            t = prog.add_task(desc or worker_cls.__name__, total=len(tasks))
            for i, task in enumerate(tasks):
                yield i, worker(task)
                prog.advance(t)


class _WorkerHost:
    """A Ray actor that hosts one worker object at a time.

    The executor keeps its hosts across ``map`` calls, so a pipeline starts its Ray worker
    processes once instead of once per stage and phase; a host rebuilds its worker only when
    a ``map`` asks for another class or other init arguments (models still load once per
    worker per stage).
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.worker: Any = None

    def setup(self, worker_cls: type, init_args: tuple, key: tuple) -> bool:
        if key != self.key:
            self.worker = None  # drop the previous stage's models before loading new ones
            self.worker = worker_cls(*init_args)
            self.key = key
        return True

    def run(self, task: Any) -> Any:
        return self.worker(task)


class RayExecutor(Executor):
    """Ray actors, one per worker, each fed one task at a time (bounded in flight).

    With ``RAY_ADDRESS`` set it joins that cluster; otherwise it starts Ray embedded on this
    machine with at least ``workers`` CPUs. The actors live as long as the executor (until
    :meth:`close`), so consecutive stages reuse the same worker processes.
    """

    name = "ray"

    def __init__(self, workers: int = 2):
        super().__init__(workers)
        import ray

        self._ray = ray
        self._hosts: list[Any] = []
        self._calls = 0
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = dict(
                include_dashboard=False, configure_logging=False, log_to_driver=True, ignore_reinit_error=True
            )
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=max(workers, os.cpu_count() or 1), **kwargs)

    def _ensure_hosts(self, n: int) -> list[Any]:
        remote_host = self._ray.remote(num_cpus=1, max_restarts=0)(_WorkerHost)
        while len(self._hosts) < n:
            self._hosts.append(remote_host.remote())
        return self._hosts[:n]

    def map(self, worker_cls, init_args, tasks, desc=""):
        if not tasks:
            return
        ray = self._ray
        hosts = self._ensure_hosts(min(self.workers, len(tasks)))
        self._calls += 1
        key = (worker_cls.__module__, worker_cls.__qualname__, self._calls)
        queue = list(enumerate(tasks))
        queue.reverse()
        idle = list(hosts)
        pending: dict[Any, tuple[int, Any]] = {}
        try:
            ray.get([h.setup.remote(worker_cls, init_args, key) for h in hosts])
            with _progress() as prog:
                t = prog.add_task(desc or worker_cls.__name__, total=len(tasks))
                while queue or pending:
                    while idle and queue:
                        host = idle.pop()
                        i, task = queue.pop()
                        pending[host.run.remote(task)] = (i, host)
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        i, host = pending.pop(ref)
                        result = ray.get(ref)
                        idle.append(host)
                        prog.advance(t)
                        yield i, result
        except BaseException:
            # A failed setup, a failed task or an abandoned map: do not reuse those processes.
            self.close()
            raise

    def close(self) -> None:
        for h in self._hosts:
            self._ray.kill(h)
        self._hosts = []


def get_executor(name: str, workers: int) -> Executor:
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(workers)
    raise ConfigError(f"unknown executor {name!r} (choose 'ray' or 'local')")
