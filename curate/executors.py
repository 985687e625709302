"""Executors run per-task work on workers. This is the only module that imports ray.

``map(worker_cls, init_args, tasks, desc)`` constructs ``worker_cls(*init_args)`` once per
worker (models load once per worker, not per task), calls ``worker(task)`` for each task and
yields ``(task_index, result)`` in completion order. ``worker_cls`` must be a module-level
(picklable) class.

Failures:

* An exception in the stage code (worker construction or a task) stops the map with one
  :class:`~curate.errors.TaskError` naming the map's ``desc``, the task (its shard index and
  input file when the task is a dict with ``index`` / ``input``) and the record when the
  stage code says which (an exception attribute ``record`` or a note); the worker-side
  traceback rides along in ``TaskError.traceback``.
* A lost worker (its process killed, its node gone) is not an error of the task: the Ray
  executor replaces the worker and runs the task again, up to ``max_task_retries`` times
  per task (tasks write their outputs atomically and idempotently, so a rerun is safe).
  Every retry is an event that :meth:`Executor.take_events` hands to the runner (which
  records it in the stage manifest as ``retries``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import ClusterError, ConfigError, TaskError

DEFAULT_MAX_TASK_RETRIES = 3
DEFAULT_START_TIMEOUT_S = 60.0
RETRIES_ENV = "CURATE_MAX_TASK_RETRIES"
START_TIMEOUT_ENV = "CURATE_WORKER_START_TIMEOUT"


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        disable=not sys.stderr.isatty() or bool(os.environ.get("CURATE_NO_PROGRESS")),
    )


def _first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failure(exc: BaseException) -> dict:
    """What the driver needs to report an exception raised in stage code (picklable)."""
    record = getattr(exc, "record", None)
    notes = [n for n in getattr(exc, "__notes__", []) if isinstance(n, str)]
    if record is None and notes:
        record = "; ".join(_first_line(n) for n in notes)
    return {
        "error": f"{type(exc).__name__}: {_first_line(exc) or '(no message)'}",
        "traceback": "".join(traceback.format_exception(exc)),
        "record": None if record is None else str(record),
    }


def _call(fn: Any, *args: Any) -> tuple[str, Any]:
    """``("ok", fn(*args))`` or ``("error", failure)``: stage exceptions cross Ray as data,
    so an exception type that does not pickle still reaches the driver."""
    try:
        return "ok", fn(*args)
    except Exception as e:  # noqa: BLE001 - reported to the driver as a TaskError
        return "error", _failure(e)


def _task_error(desc: str, index: int | None, task: Any, failure: dict) -> TaskError:
    shard, path = index, None
    if isinstance(task, dict):
        if isinstance(task.get("index"), int):
            shard = task["index"]
        for k in ("input", "path", "shard", "file"):
            if isinstance(task.get(k), (str, os.PathLike)):
                path = str(task[k])
                break
    return TaskError(desc, shard, failure["error"], failure.get("traceback", ""), input=path,
                     record=failure.get("record"))


def _resolve_retries(value: int | None) -> int:
    env = os.environ.get(RETRIES_ENV)
    if env not in (None, ""):
        try:
            value = int(env)
        except ValueError:
            raise ConfigError(f"{RETRIES_ENV} must be an integer, got {env!r}") from None
    value = DEFAULT_MAX_TASK_RETRIES if value is None else value
    if value < 0:
        raise ConfigError(f"max_task_retries must be >= 0, got {value}")
    return value


class Executor:
    """Base class: ``workers`` and the retry limit, and the retry events of past maps."""

    name = "base"

    def __init__(self, workers: int = 1, max_task_retries: int | None = None):
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.max_task_retries = _resolve_retries(max_task_retries)
        self._events: list[dict] = []

    def map(self, worker_cls: type, init_args: tuple, tasks: list, desc: str = "") -> Iterator[tuple[int, Any]]:
        raise NotImplementedError

    def take_events(self) -> list[dict]:
        """The retry events since the last call (and forget them).

        Each is ``{"desc", "task", "attempt", "error", "node"}``: the map's description, the
        task's shard index (or position), the attempt that was lost (1 = first run), the
        first line of the error and the node id of the lost worker (None when unknown).
        """
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        pass


class LocalExecutor(Executor):
    """In-process, sequential: for tests and debugging (``workers`` is recorded, not used).
    Nothing is retried here: a lost worker is a lost driver."""

    name = "local"

    def map(self, worker_cls, init_args, tasks, desc=""):
        if not tasks:
            return
        desc = desc or worker_cls.__name__
        status, worker = _call(worker_cls, *init_args)
        if status == "error":
            raise _task_error(desc, None, None, worker)
        with _progress() as prog:
            t = prog.add_task(desc, total=len(tasks))
            for i, task in enumerate(tasks):
                status, result = _call(worker, task)
                if status == "error":
                    raise _task_error(desc, i, task, result)
                yield i, result
                prog.advance(t)


def _exit_with_parent(interval_s: float = 0.2) -> None:
    """Exit this process as soon as its parent (the node's raylet) is gone.

    A Ray worker otherwise notices a dead raylet only after seconds and keeps writing shards
    meanwhile; after a driver kill (embedded Ray goes down with its driver) or a node kill
    the workers stop within ``interval_s``.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="curate-parent-watch", daemon=True).start()


def _release_memory() -> None:
    """Collect garbage and hand free memory back to the OS (Arrow's pool, then glibc's heap
    with ``malloc_trim``), so that a worker does not carry the previous stage's peak into the
    next one."""
    import ctypes
    import gc

    gc.collect()
    pa = sys.modules.get("pyarrow")
    if pa is not None:
        pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


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
        _exit_with_parent()

    def setup(self, worker_cls: type, init_args: tuple, key: tuple) -> tuple[str, Any]:
        """Build the worker for ``key``; returns ``("ok", (pid, node_id))`` or a failure."""
        if key != self.key:
            self.worker, self.key = None, None  # drop the previous stage's models first
            _release_memory()
            status, worker = _call(worker_cls, *init_args)
            if status == "error":
                return status, worker
            self.worker, self.key = worker, key
        import ray

        return "ok", (os.getpid(), ray.get_runtime_context().get_node_id())

    def run(self, task: Any) -> tuple[str, Any]:
        return _call(self.worker, task)


class _Host:
    """The driver's view of one actor: its handle, where it runs, when it was started."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.pid: int | None = None
        self.node: str | None = None
        self.started = time.monotonic()


# Run by the reaper process: read "pid start_time" lines until the driver's end of the pipe
# closes (the driver exited, however it died), then kill each listed process still alive.
_REAPER = """
import os, signal, sys, psutil
procs = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
for pid, started in procs:
    try:
        p = psutil.Process(int(pid))
        if repr(p.create_time()) == started:
            os.kill(p.pid, signal.SIGKILL)
    except (psutil.Error, OSError):
        pass
"""


def _children() -> dict[int, Any]:
    import psutil

    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def _start_reaper(before: dict[int, Any]) -> subprocess.Popen | None:
    """Make the Ray processes that an embedded ``ray.init()`` started (GCS, raylet, dashboard
    and runtime-env agents: this process's descendants that were not there ``before``) end
    with this driver, even after a ``kill -9`` of it: Ray ties GCS and raylet to the driver,
    but its two agents otherwise linger for up to a minute."""
    import psutil

    procs = [p for pid, p in _children().items() if pid not in before]
    if not procs:
        return None
    reaper = subprocess.Popen([sys.executable, "-c", _REAPER], stdin=subprocess.PIPE, text=True,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in procs:
        try:
            reaper.stdin.write(f"{p.pid} {p.create_time()!r}\n")
        except psutil.Error:
            pass
    reaper.stdin.flush()  # the pipe stays open: its end (our exit) is the signal
    return reaper


@contextmanager
def _lean_embedded_head() -> Iterator[None]:
    """While it is active, an embedded ``ray.init()`` starts its one-machine node without two
    head daemons that such a run never uses: the autoscaler monitor (there is nothing to scale)
    and the API server (with ``include_dashboard=False`` it serves only usage statistics; Ray
    already runs without it when it fails to start). GCS, raylet, its agents and the log
    monitor (worker output still reaches the terminal) start as usual. On 2 cores this takes
    about 1.9 s off ``ray.init`` and about 200 MB off the process tree (docs/BENCHMARKS.md).

    Ray exposes neither choice through ``ray.init``, so this sets ``RayParams.no_monitor`` (a
    field of Ray's own) and skips ``Node.start_api_server`` for the duration of the call."""
    from ray._private import node as ray_node
    from ray._private import parameter as ray_parameter

    params_init, start_api_server = ray_parameter.RayParams.__init__, ray_node.Node.start_api_server

    def no_monitor(self, *args, **kwargs):
        kwargs["no_monitor"] = True
        params_init(self, *args, **kwargs)

    ray_parameter.RayParams.__init__ = no_monitor
    ray_node.Node.start_api_server = lambda self, **_kw: None
    try:
        yield
    finally:
        ray_parameter.RayParams.__init__, ray_node.Node.start_api_server = params_init, start_api_server


_handlers_installed = False


def _install_signal_handlers() -> None:
    """SIGTERM / SIGHUP end the driver through the normal exit path (``SystemExit``), so the
    executor kills its actors and Ray shuts down instead of leaving workers running."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    # SIGTERM: replaces Ray's handler (which also exits, but after its C++ layer prints a
    # stack dump); SIGHUP only when nobody else handles it.
    signal.signal(signal.SIGTERM, stop)
    if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGHUP, stop)
    _handlers_installed = True


class RayExecutor(Executor):
    """Ray actors, one per worker, each fed one task at a time (bounded in flight).

    With ``RAY_ADDRESS`` set it joins that cluster; otherwise it starts Ray embedded on this
    machine with at least ``workers`` CPUs. The actors are spread over the cluster's nodes,
    owned by the driver (they die with it) and live as long as the executor (until
    :meth:`close`), so consecutive stages reuse the same worker processes.

    A lost actor is replaced (Ray schedules the new one wherever there is room) and its task
    rerun, up to ``max_task_retries`` times per task. A worker that cannot start within
    ``start_timeout_s`` (``CURATE_WORKER_START_TIMEOUT``) is waited for in the background
    while the others go on (said once on stderr); with none started it is a
    :class:`ClusterError` naming the resources the cluster has.
    """

    name = "ray"

    def __init__(self, workers: int = 2, max_task_retries: int | None = None,
                 start_timeout_s: float | None = None, log=None):
        super().__init__(workers, max_task_retries)
        import ray

        self._ray = ray
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        env = os.environ.get(START_TIMEOUT_ENV)
        try:
            self.start_timeout_s = float(env) if env else (start_timeout_s or DEFAULT_START_TIMEOUT_S)
        except ValueError:
            raise ConfigError(f"{START_TIMEOUT_ENV} must be a number of seconds, got {env!r}") from None
        self._hosts: list[_Host] = []
        self._calls = 0
        self._remote_host = None
        self._reaper = None
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = dict(
                include_dashboard=False, configure_logging=False, log_to_driver=True, ignore_reinit_error=True
            )
            if address:
                ray.init(address=address, **kwargs)
            else:
                before = _children()
                with _lean_embedded_head():
                    ray.init(num_cpus=max(workers, os.cpu_count() or 1), **kwargs)
                self._reaper = _start_reaper(before)
            _install_signal_handlers()  # after ray.init, which installs its own SIGTERM handler

    # -- hosts -------------------------------------------------------------------------

    def _new_host(self) -> _Host:
        if self._remote_host is None:
            # SPREAD: one worker per node where possible; max_restarts=0: the executor itself
            # replaces a lost actor (and reruns its task), so it knows what was lost.
            self._remote_host = self._ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD")(_WorkerHost)
        host = _Host(self._remote_host.remote())
        self._hosts.append(host)
        return host

    def _drop(self, host: _Host) -> None:
        if host in self._hosts:
            self._hosts.remove(host)
        try:
            self._ray.kill(host.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def worker_pids(self) -> list[int]:
        """Process ids of the started workers (as of their last setup)."""
        return [h.pid for h in self._hosts if h.pid is not None]

    def _cluster_cpus(self) -> tuple[float, float]:
        try:
            total = self._ray.cluster_resources().get("CPU", 0.0)
            free = self._ray.available_resources().get("CPU", 0.0)
        except Exception:  # noqa: BLE001 - only used for messages
            return 0.0, 0.0
        return total, free

    def _workers_for(self, n_tasks: int) -> int:
        want = min(self.workers, n_tasks)
        total, _ = self._cluster_cpus()
        if 1 <= total < want:
            self._log(f"curate: the Ray cluster has {total:g} CPUs: running with {int(total)} "
                      f"workers instead of {want}")
            want = int(total)
        return want

    def _lost_errors(self) -> tuple[type, ...]:
        ex = self._ray.exceptions
        return (ex.RayActorError, ex.WorkerCrashedError, ex.NodeDiedError, ex.ObjectLostError,
                ex.LocalRayletDiedError, ex.OutOfMemoryError)

    # -- map ---------------------------------------------------------------------------

    def map(self, worker_cls, init_args, tasks, desc=""):
        if not tasks:
            return
        self._calls += 1
        run = _MapRun(self, worker_cls, init_args, tasks, desc or worker_cls.__name__)
        try:
            with _progress() as prog:
                bar = prog.add_task(run.desc, total=len(tasks))
                for i, result in run.results():
                    prog.advance(bar)
                    yield i, result
        except BaseException:
            # A failed task, a failed setup or an abandoned map: do not reuse those processes.
            self.close()
            raise
        run.drop_unstarted()

    def close(self) -> None:
        for h in list(self._hosts):
            self._drop(h)
        self._hosts = []


def _remote_failure(e: Any) -> dict:
    """A failure Ray raised for a call (the worker could not even run it: e.g. the worker
    class does not unpickle on that node), reported like a stage exception."""
    cause = getattr(e, "cause", None)
    error = f"{type(cause).__name__}: {_first_line(cause)}" if isinstance(cause, BaseException) else _first_line(e)
    return {"error": error, "traceback": re.sub(r"\x1b\[[0-9;]*m", "", str(e))}


class _MapRun:
    """The state of one :meth:`RayExecutor.map`: hosts starting, idle and busy, the queue of
    tasks and their attempts. ``results()`` yields ``(index, result)`` as tasks finish."""

    def __init__(self, ex: RayExecutor, worker_cls: type, init_args: tuple, tasks: list, desc: str):
        self.ex, self.ray, self.lost = ex, ex._ray, ex._lost_errors()
        self.worker_cls, self.init_args, self.tasks, self.desc = worker_cls, init_args, tasks, desc
        self.key = (worker_cls.__module__, worker_cls.__qualname__, ex._calls)
        self.want = ex._workers_for(len(tasks))
        self.queue = deque(range(len(tasks)))
        self.attempts = [1] * len(tasks)
        self.starting: dict[Any, _Host] = {}
        self.idle: list[_Host] = []
        self.busy: dict[Any, tuple[int, _Host]] = {}
        self.lost_starts, self.warned = 0, False
        for extra in ex._hosts[self.want:]:
            ex._drop(extra)
        for host in list(ex._hosts):
            self.start(host)
        while len(ex._hosts) < self.want:
            self.start(ex._new_host())

    def start(self, host: _Host) -> None:
        host.started = time.monotonic()
        self.starting[host.handle.setup.remote(self.worker_cls, self.init_args, self.key)] = host

    def replace(self, host: _Host) -> None:
        self.ex._drop(host)
        self.start(self.ex._new_host())

    def results(self) -> Iterator[tuple[int, Any]]:
        while self.queue or self.busy:
            while self.idle and self.queue:
                host, i = self.idle.pop(), self.queue.popleft()
                self.busy[host.handle.run.remote(self.tasks[i])] = (i, host)
            done, _ = self.ray.wait([*self.busy, *self.starting], num_returns=1, timeout=1.0)
            if not done:
                self.check_starts()
            elif done[0] in self.starting:
                self.on_started(done[0])
            else:
                out = self.on_finished(done[0])
                if out is not None:
                    yield out

    def on_started(self, ref: Any) -> None:
        host = self.starting.pop(ref)
        try:
            status, payload = self.ray.get(ref)
        except self.lost as e:
            self.lost_starts += 1
            if self.lost_starts > (self.ex.max_task_retries + 1) * self.want:
                raise ClusterError(f"stage {self.desc!r}: {self.lost_starts} workers were lost while starting "
                                   f"(last: {_first_line(e)})") from None
            self.replace(host)
            return
        except self.ray.exceptions.RayTaskError as e:
            raise _task_error(self.desc, None, None, _remote_failure(e)) from None
        if status == "error":
            raise _task_error(self.desc, None, None, payload)
        host.pid, host.node = payload
        self.idle.append(host)

    def on_finished(self, ref: Any) -> tuple[int, Any] | None:
        i, host = self.busy.pop(ref)
        try:
            status, payload = self.ray.get(ref)
        except self.lost as e:
            self.retry(i, host, e)
            self.queue.appendleft(i)
            self.replace(host)
            return None
        except self.ray.exceptions.RayTaskError as e:
            raise _task_error(self.desc, i, self.tasks[i], _remote_failure(e)) from None
        if status == "error":
            raise _task_error(self.desc, i, self.tasks[i], payload)
        self.idle.append(host)
        return i, payload

    def retry(self, i: int, host: _Host, e: Exception) -> None:
        """Record that task ``i`` lost its worker; raise TaskError once it has no retries left."""
        ex, task, line = self.ex, self.tasks[i], _first_line(e)
        shard = task["index"] if isinstance(task, dict) and isinstance(task.get("index"), int) else i
        ex._events.append({"desc": self.desc, "task": shard, "attempt": self.attempts[i], "error": line,
                           "node": host.node})
        if self.attempts[i] > ex.max_task_retries:
            raise _task_error(self.desc, i, task, {
                "error": f"worker lost {self.attempts[i]} times (max_task_retries={ex.max_task_retries}); last: {line}",
                "traceback": "".join(traceback.format_exception(e)),
            })
        ex._log(f"curate: {self.desc}: task {shard} lost its worker ({line}); retrying "
                f"(attempt {self.attempts[i] + 1} of {ex.max_task_retries + 1})")
        self.attempts[i] += 1

    def check_starts(self) -> None:
        """Workers still starting after the timeout: go on without them (said once), or fail
        when none runs."""
        ex, now = self.ex, time.monotonic()
        late = [h for h in self.starting.values() if now - h.started > ex.start_timeout_s]
        if not late:
            return
        total, free = ex._cluster_cpus()
        if not (self.idle or self.busy):
            raise ClusterError(
                f"no Ray worker started within {ex.start_timeout_s:g} s ({len(late)} waiting for a CPU or still booting; "
                f"the cluster has {free:g} of {total:g} CPUs free): free resources, add nodes or lower "
                f"--workers ({START_TIMEOUT_ENV} sets the wait)")
        if not self.warned:
            ex._log(f"curate: {len(late)} of {self.want} workers not started after {ex.start_timeout_s:g} s "
                    f"(cluster: {free:g} of {total:g} CPUs free): continuing with "
                    f"{self.want - len(self.starting)} while they wait")
            self.warned = True

    def drop_unstarted(self) -> None:
        """Hosts that never came up: do not carry a pending actor into the next map."""
        for host in self.starting.values():
            self.ex._drop(host)


def get_executor(name: str, workers: int, max_task_retries: int | None = None) -> Executor:
    """The executor ``name`` (``ray`` or ``local``); ``max_task_retries`` (default 3, the
    ``CURATE_MAX_TASK_RETRIES`` environment variable wins) bounds reruns after lost workers."""
    if name == "local":
        return LocalExecutor(workers, max_task_retries)
    if name == "ray":
        return RayExecutor(workers, max_task_retries)
    raise ConfigError(f"unknown executor {name!r} (choose 'ray' or 'local')")
