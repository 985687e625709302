"""The Ray executor (embedded): the same shards as the local one with 1 and 2 workers, workers
reused across maps, errors as TaskError, a retry limit for lost workers, and what happens when
the cluster has too few CPUs (a clear error, or fewer workers, never a hang)."""

import os
import sys

import pytest

from curate.runner import run_pipeline
from tests.warcfixtures import write_warc

pytestmark = pytest.mark.ray


def _bytes(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.parquet"))}


def test_ray_matches_local(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(4):
        write_warc(inp / f"p{i}.warc.gz", gz=True, corrupt_after=1 if i == 2 else None)
    spec = {"pipeline": "t", "stages": {"extract": {"input": {"paths": [str(inp)]}}}}
    local = run_pipeline(spec, tmp_path / "local", executor="local", workers=1, log=lambda *_: None)
    ray2 = run_pipeline(spec, tmp_path / "ray2", executor="ray", workers=2, log=lambda *_: None)
    ray1 = run_pipeline(spec, tmp_path / "ray1", executor="ray", workers=1, log=lambda *_: None)
    assert local["extract"]["kept_rows"] == ray2["extract"]["kept_rows"] > 0
    assert _bytes(tmp_path / "local" / "extract") == _bytes(tmp_path / "ray2" / "extract") == _bytes(tmp_path / "ray1" / "extract")
    assert ray2["extract"]["executor"] == "ray" and ray2["extract"]["workers"] == 2


def test_workers_are_reused_across_stages_and_rebuilt_per_stage(tmp_path):
    """One set of Ray worker processes serves consecutive map calls; each call gets a freshly
    built worker object (its own init arguments), and a failing task surfaces its error."""
    from curate.executors import get_executor

    ex = get_executor("ray", 2)
    try:
        first = dict(ex.map(_Pid, ("a",), list(range(6))))
        second = dict(ex.map(_Pid, ("b",), list(range(6))))
        assert {p for p, _ in first.values()} == {p for p, _ in second.values()}
        assert {tag for _, tag in first.values()} == {"a"} and {tag for _, tag in second.values()} == {"b"}
        with pytest.raises(Exception, match="task 3 failed"):
            list(ex.map(_Fails, (), list(range(5))))
    finally:
        ex.close()


class _Pid:
    def __init__(self, tag):
        self.tag = tag

    def __call__(self, task):
        import os

        return os.getpid(), self.tag


class _Fails:
    def __call__(self, task):
        if task == 3:
            raise ValueError(f"task {task} failed")
        return task


class _BadInit:
    def __init__(self):
        raise RuntimeError("model file missing")

    def __call__(self, task):
        return task


def test_worker_setup_error_surfaces_and_executor_recovers():
    from curate.executors import get_executor

    ex = get_executor("ray", 2)
    try:
        with pytest.raises(Exception, match="model file missing"):
            list(ex.map(_BadInit, (), [1, 2, 3]))
        assert sorted(r for _, r in ex.map(_Fails, (), [0, 1, 2])) == [0, 1, 2]
    finally:
        ex.close()


def test_task_errors_name_the_task_and_carry_the_worker_traceback():
    from curate.errors import TaskError
    from curate.executors import get_executor

    ex = get_executor("ray", 2)
    try:
        tasks = [{"index": 10 + i, "input": f"/data/part-{i}.warc.gz"} for i in range(4)]
        with pytest.raises(TaskError) as info:
            list(ex.map(_FailsOnInput, (), tasks, desc="stage-x"))
        e = info.value
        assert (e.stage, e.task, e.input) == ("stage-x", 12, "/data/part-2.warc.gz")
        assert e.error == "KeyError: 'title'" and e.record == "offset 4096"
        assert "in __call__" in e.traceback and "raise err" in e.traceback
        assert str(e) == "stage 'stage-x' task 12 (input /data/part-2.warc.gz) record offset 4096: KeyError: 'title'"
        with pytest.raises(TaskError, match=r"stage 'setup-y' \(worker setup\): RuntimeError: model file missing"):
            list(ex.map(_BadInit, (), [1], desc="setup-y"))
    finally:
        ex.close()


class _FailsOnInput:
    def __call__(self, task):
        if task["input"].endswith("part-2.warc.gz"):
            err = KeyError("title")
            err.record = "offset 4096"
            raise err
        return task["index"]


class _ExitsOn:
    """Kills its own process on task ``n``: to the executor, a lost worker every time."""

    def __init__(self, n):
        self.n = n

    def __call__(self, task):
        if task == self.n:
            os._exit(3)
        return task


def test_a_task_that_always_loses_its_worker_stops_after_the_retries():
    from curate.errors import TaskError
    from curate.executors import RayExecutor

    logged = []
    ex = RayExecutor(2, max_task_retries=1, log=logged.append)
    try:
        with pytest.raises(TaskError, match=r"task 2: worker lost 2 times \(max_task_retries=1\); last: "):
            list(ex.map(_ExitsOn, (2,), list(range(5)), desc="crashy"))
        events = ex.take_events()
        assert [(ev["desc"], ev["task"], ev["attempt"]) for ev in events] == [("crashy", 2, 1), ("crashy", 2, 2)]
        assert ex.take_events() == []
        assert any("task 2 lost its worker" in m and "attempt 2 of 2" in m for m in logged)
    finally:
        ex.close()


@pytest.fixture
def cpus_taken():
    """Occupy CPUs of the embedded Ray with idle actors (``take(n)``); freed afterwards."""
    import ray

    from curate.executors import get_executor

    get_executor("ray", 1).close()  # Ray is up
    blockers = []

    def take(n):
        blocker = ray.remote(num_cpus=n)(_Idle).remote()
        ray.get(blocker.ready.remote())
        blockers.append(blocker)
        return ray.cluster_resources()["CPU"]

    yield take
    for b in blockers:
        ray.kill(b)


class _Sleepy:
    def __init__(self, seconds):
        self.seconds = seconds

    def __call__(self, task):
        import time

        time.sleep(self.seconds)
        return task


class _Idle:
    def ready(self):
        return True


def test_no_free_cpu_is_a_clear_error_not_a_hang(cpus_taken, monkeypatch):
    import ray

    from curate.errors import ClusterError
    from curate.executors import RayExecutor

    total = ray.cluster_resources()["CPU"]
    cpus_taken(total)
    monkeypatch.setenv("CURATE_WORKER_START_TIMEOUT", "2")
    ex = RayExecutor(2, log=lambda m: None)
    try:
        with pytest.raises(ClusterError, match=rf"no Ray worker started within 2 s .* 0 of {total:g} CPUs free"):
            list(ex.map(_Fails, (), [0, 1, 2]))
    finally:
        ex.close()


def test_too_few_cpus_runs_with_fewer_workers_and_says_so(cpus_taken, monkeypatch):
    import ray

    from curate.executors import RayExecutor

    total = ray.cluster_resources()["CPU"]
    cpus_taken(total - 1)  # one CPU left for two workers
    # the wait must outlast a worker's start on a busy machine; the tasks outlast the wait
    monkeypatch.setenv("CURATE_WORKER_START_TIMEOUT", "8")
    logged = []
    ex = RayExecutor(2, log=logged.append)
    try:
        assert sorted(r for _, r in ex.map(_Sleepy, (3.0,), [0, 1, 2, 4])) == [0, 1, 2, 4]  # 12 s on one worker
        assert len(set(ex.worker_pids())) == 1
        assert any("1 of 2 workers not started after 8 s" in m and "continuing with 1" in m for m in logged)
    finally:
        ex.close()
    more = RayExecutor(int(total) + 3, log=logged.append)
    try:
        assert len(dict(more.map(_Sleepy, (0,), list(range(6))))) == 6
        assert f"curate: the Ray cluster has {total:g} CPUs: running with {int(total)} workers instead of {int(total) + 3}" in logged
    finally:
        more.close()


_LEAN_HEAD_SCRIPT = r"""
import sys, psutil
from curate.executors import get_executor
from tests.test_ray_executor import _Prints
ex = get_executor("ray", 1)
print("results", sorted(r for _, r in ex.map(_Prints, (), [1, 2])), flush=True)
for p in psutil.Process().children(recursive=True):
    try:
        print("proc", " ".join(p.cmdline()), flush=True)
    except psutil.Error:
        pass
ex.close()
"""


class _Prints:
    def __call__(self, task):
        print(f"worker says {task}", file=sys.stderr, flush=True)
        return task * 10


def test_embedded_ray_starts_no_monitor_or_api_server_and_worker_output_still_shows(tmp_path):
    """The embedded head leaves out the autoscaler monitor and the API server (nothing to
    scale, no dashboard) but keeps GCS, raylet and the log monitor: a worker's stderr still
    reaches the driver."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    res = subprocess.run([sys.executable, "-c", _LEAN_HEAD_SCRIPT], cwd=root, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert "results [10, 20]" in out
    procs = [line for line in res.stdout.splitlines() if line.startswith("proc ")]
    assert any("gcs_server" in p for p in procs) and any("/raylet " in p or p.endswith("/raylet") or "raylet --" in p for p in procs)
    assert any("log_monitor.py" in p for p in procs)
    assert not any("autoscaler/_private/monitor.py" in p for p in procs), procs
    assert not any("dashboard/dashboard.py" in p for p in procs), procs
    assert "worker says 1" in out and "worker says 2" in out
