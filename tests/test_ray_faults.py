"""Fault tolerance of the Ray executor (embedded), and how a task's own error reaches the user.

* A Ray worker process killed mid-stage is replaced, its task rerun, the run completes with
  the same bytes as an uninterrupted run, and the retry is in the stage manifest.
* An exception in stage code is a TaskError naming stage, shard, input file and record, with
  the worker's traceback; the CLI prints it as one line and writes the traceback to a log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.config import StageConfig
from curate.errors import TaskError
from curate.runner import Runner, run_pipeline
from curate.stage import MapStage, ShardResult
from tests.warcfixtures import write_warc

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *_: None)


class Explode(MapStage):
    """A map stage that raises on one document (its id), saying which record it was."""

    name = "explode"

    class Config(StageConfig):
        fail_id: str

    def process(self, table: pa.Table) -> ShardResult:
        for doc_id in table.column("id").to_pylist():
            if doc_id == self.config.fail_id:
                e = ValueError("cannot score this document")
                e.add_note(f"id={doc_id}")
                raise e
        return ShardResult(kept=table, rejected=table.slice(0, 0))


def _parquet_bytes(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.parquet"))}


def _extract_spec(corpus: Path, executor: str) -> dict:
    return {"pipeline": "faults", "executor": executor, "workers": 2,
            "stages": {"extract": {"input": {"paths": [str(corpus)]}}}}


@pytest.fixture(scope="module")
def uninterrupted(sample_corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    run_pipeline(_extract_spec(sample_corpus, "local"), run, **QUIET)
    return run


@pytest.mark.ray
def test_killed_worker_is_replaced_and_the_run_is_byte_identical(sample_corpus, uninterrupted, tmp_path):
    run = tmp_path / "ray"
    runner = Runner(_extract_spec(sample_corpus, "ray"), run, **QUIET)
    ex = runner.executor
    killed: list[int] = []

    def kill_one_worker_mid_stage():
        shards = run / "extract" / "_shards"
        deadline = time.time() + 300
        while time.time() < deadline and not (shards.is_dir() and any(shards.glob("*.json"))):
            time.sleep(0.01)
        pid = ex.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_one_worker_mid_stage, daemon=True)
    killer.start()
    try:
        runner.run()
        after = ex.worker_pids()
    finally:
        runner.close()
    killer.join(timeout=5)
    assert killed, "the worker was not killed"
    assert killed[0] not in after and len(after) == 2  # replaced, still two workers
    manifest = json.loads((run / "extract" / "_manifest.json").read_text())
    n_shards = len(manifest["inputs"])  # the WARC files and the folder of HTML files
    assert n_shards >= 4
    assert len(list((run / "extract" / "_shards").glob("part-*.json"))) == n_shards
    retries = manifest["retries"]
    assert len(retries) >= 1
    assert {r["desc"] for r in retries} == {"extract"}
    assert all(r["attempt"] == 1 and 0 <= r["task"] < n_shards and r["error"] and r["node"] for r in retries)
    assert _parquet_bytes(run / "extract") == _parquet_bytes(uninterrupted / "extract")
    assert manifest["conservation"]["ok"]


@pytest.fixture(scope="module")
def small_extract(tmp_path_factory):
    """Two WARC files through extract; the id of the first document of shard 1."""
    base = tmp_path_factory.mktemp("explode")
    inp = base / "in"
    inp.mkdir()
    for i in range(2):
        write_warc(inp / f"p{i}.warc.gz")
    run = base / "run"
    run_pipeline(_extract_spec(inp, "local"), run, **QUIET)
    first = pq.read_table(run / "extract" / "part-00001.parquet").column("id")[0].as_py()
    return inp, run, first


def _explode_spec(inp: Path, fail_id: str, executor: str) -> dict:
    spec = _extract_spec(inp, executor)
    spec["stages"]["explode"] = {"type": "tests.test_ray_faults:Explode", "input": "extract",
                                 "config": {"fail_id": fail_id}}
    return spec


@pytest.mark.ray
def test_stage_exception_under_ray_is_a_task_error_with_the_remote_traceback(small_extract, tmp_path):
    inp, run, fail_id = small_extract
    with pytest.raises(TaskError) as info:
        run_pipeline(_explode_spec(inp, fail_id, "ray"), tmp_path / "run", **QUIET)
    e = info.value
    assert (e.stage, e.task) == ("explode", 1)
    assert e.input.endswith("extract/part-00001.parquet")
    assert e.record == f"id={fail_id}"
    assert e.error == "ValueError: cannot score this document"
    assert "Traceback (most recent call last)" in e.traceback and 'raise e' in e.traceback
    line = str(e)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("stage 'explode' task 1 (input ") and line.endswith(
        f"record id={fail_id}: ValueError: cannot score this document")


def test_cli_prints_one_line_and_logs_the_traceback(small_extract, tmp_path):
    inp, _, fail_id = small_extract
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(json.dumps(_explode_spec(inp, fail_id, "local")))  # JSON is YAML
    run = tmp_path / "run"
    env = {**os.environ, "CURATE_NO_PROGRESS": "1", "COLUMNS": "60"}
    res = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(pipeline), "--run", str(run)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1, res.stderr
    line = errors[0]
    assert line.startswith("error: stage 'explode' task 1 (input ")
    assert "extract/part-00001.parquet" in line and f"record id={fail_id}" in line
    assert "ValueError: cannot score this document" in line and "\x1b" not in line
    logs = list((run / "_logs").glob("*-explode.log"))
    assert len(logs) == 1 and f"(full traceback: {logs[0]})" in line
    text = logs[0].read_text()
    assert text.splitlines()[0] == line[len("error: "):line.index(" (full traceback")]
    assert "Traceback (most recent call last)" in text and "cannot score this document" in text


@pytest.mark.ray
def test_after_a_driver_kill_no_shard_is_written_and_no_ray_process_lingers(sample_corpus, tmp_path):
    import psutil

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(json.dumps(_extract_spec(sample_corpus, "ray")))
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "driver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(pipeline), "--run", str(run)],
                                cwd=ROOT, env={**env, "CURATE_NO_PROGRESS": "1"}, stdout=out, stderr=out)
    shards = run / "extract" / "_shards"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (shards.is_dir() and any(shards.glob("part-*.json"))):
        time.sleep(0.01)
    assert proc.poll() is None, log.read_text()[-3000:]
    ray_procs = psutil.Process(proc.pid).children(recursive=True)  # GCS, raylet, agents, workers
    proc.kill()
    proc.wait()
    assert not (run / "extract" / "_SUCCESS").exists(), "the stage finished before the driver was killed"
    assert len(ray_procs) >= 4

    def written():
        return sorted(p.name for p in (run / "extract").rglob("part-*") if not p.name.endswith(".tmp"))

    time.sleep(1.0)
    after_1s = written()
    gone, alive = psutil.wait_procs(ray_procs, timeout=5)  # before: two Ray agents for ~70 s
    assert alive == [], [p.pid for p in alive]
    assert written() == after_1s  # nothing written after the workers' first second without a driver
    assert len([n for n in after_1s if n.endswith(".json")]) < len(list(sample_corpus.glob("*.warc.gz"))) + 1


def test_retry_limit_comes_from_the_pipeline_unless_the_environment_says(tmp_path, monkeypatch):
    from curate.errors import ConfigError

    monkeypatch.delenv("CURATE_MAX_TASK_RETRIES", raising=False)
    spec = {**_extract_spec(tmp_path, "local"), "max_task_retries": 5}
    assert Runner(spec, tmp_path / "r1", **QUIET).executor.max_task_retries == 5
    assert Runner(_extract_spec(tmp_path, "local"), tmp_path / "r2", **QUIET).executor.max_task_retries == 3
    monkeypatch.setenv("CURATE_MAX_TASK_RETRIES", "1")  # what `curate run --max-task-retries 1` sets
    assert Runner(spec, tmp_path / "r3", **QUIET).executor.max_task_retries == 1
    monkeypatch.setenv("CURATE_MAX_TASK_RETRIES", "-1")
    with pytest.raises(ConfigError, match="max_task_retries must be >= 0, got -1"):
        Runner(spec, tmp_path / "r4", **QUIET).executor
