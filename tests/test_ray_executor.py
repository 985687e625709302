"""The Ray executor (embedded) gives the same shards as the local one, with 1 and 2 workers."""

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
