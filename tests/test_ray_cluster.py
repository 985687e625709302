"""A real two-node Ray cluster on loopback, driven as the README's cluster section says.

The test starts a head node and a worker node (``ray start --block``, each with its own temp
dir and ports, token authentication on), submits the demo pipeline on a small sample crawl
with ``make submit``, kills the worker node (every process of it) while extract runs,
starts it again, and checks that the job succeeds with data files byte-identical to an
embedded run of the same pipeline and that the lost task's retry is in the manifest. It
stops only the processes it started. Slow (about two minutes here): ``.ci/run`` runs it
after ``make test``. The fast tests below check what ``make submit`` builds, without Ray.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA_SKIP = {"_manifest.json", "_SUCCESS", "_pipeline.json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One ``ray start --block`` process and everything it spawns (killed or stopped as one)."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, float] = {}  # pid -> create time of every process of this node
        self.start()

    def start(self) -> None:
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([str(BIN / "ray"), "start", "--block", *self.args], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def processes(self) -> list[psutil.Process]:
        """The node's live processes (also those reparented since: remembered by pid)."""
        procs = []
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.Error:
                pass
        alive = []
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        return alive

    def running_task(self) -> bool:
        """Whether one of the node's processes is running an executor task right now."""
        for p in self.processes():
            try:
                if any("_WorkerHost.run" in part for part in p.cmdline()):
                    return True
            except psutil.Error:
                pass
        return False

    def kill(self) -> None:
        """SIGKILL every process of the node at once (a node that dies)."""
        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        self.proc.wait(timeout=10)
        self.seen.clear()

    def stop(self) -> None:
        """SIGTERM to ``ray start --block`` (it stops its node), then SIGKILL what is left."""
        self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.time() + 10
        while self.processes() and time.time() < deadline:
            time.sleep(0.2)
        for p in self.processes():
            p.kill()
        psutil.wait_procs(self.processes(), timeout=5)


def _pipeline_on(sample: Path, out: Path) -> Path:
    """The demo pipeline with its extract input pointed at ``sample`` (for the embedded run)."""
    data = yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())
    data["stages"]["extract"]["input"] = {"paths": [str(sample)]}
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _data_files(run: Path) -> dict[str, bytes]:
    """Every data file of a run (shards, models, token arrays), not manifests or markers."""
    out = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run)
        if not p.is_file() or p.name in DATA_SKIP or rel.parts[0] == "_logs" \
                or "_shards" in rel.parts or "_work" in rel.parts or p.suffix == ".json":
            continue
        out[str(rel)] = p.read_bytes()
    return out


def _wait(cond, timeout: float, what: str, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _nodes(env: dict, dashboard: str) -> list[dict]:
    res = subprocess.run([str(BIN / "ray"), "list", "nodes", "--address", dashboard, "--format", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        return []
    try:
        return [n for n in json.loads(res.stdout) if n.get("state") == "ALIVE"]
    except json.JSONDecodeError:
        return []


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory) -> Path:
    pytest.importorskip("mimesis")
    from samples.samplegen import generate

    out = tmp_path_factory.mktemp("sample")
    generate(out, seed=0, shards=4, scale=0.5)
    return out


@pytest.mark.slow
@pytest.mark.ray
def test_demo_job_survives_a_killed_worker_node(small_sample, tmp_path):
    if shutil.which("lmplz", path=str(BIN)) is None:
        pytest.skip("lmplz not built (make lmplz)")
    base = Path(tempfile.mkdtemp(prefix="curate-ray-", dir="/tmp"))  # short: Ray's socket paths
    token = base / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0", CURATE_NO_PROGRESS="1")
    cluster_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    gcs, dash = _free_port(), _free_port()
    dashboard = f"http://127.0.0.1:{dash}"
    head = Node(["--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--num-cpus", "2",
                 "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                 "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
                 "--metrics-export-port", str(_free_port()), "--temp-dir", str(base / "head")],
                cluster_env, base / "head.log")
    worker_args = ["--address", f"127.0.0.1:{gcs}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                   "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
                   "--temp-dir", str(base / "worker")]
    worker = None
    job = None
    try:
        worker = Node(worker_args, cluster_env, base / "worker.log")
        # the embedded reference run while the cluster starts (plain env: no cluster, no token mode)
        ref = tmp_path / "embedded"
        res = subprocess.run([str(BIN / "curate"), "run", str(_pipeline_on(small_sample, tmp_path / "p.yaml")),
                              "--run", str(ref)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]

        nodes = _wait(lambda: (n := _nodes(cluster_env, dashboard)) and len(n) == 2 and n, 120, "two alive nodes")
        worker_id = next(n["node_id"] for n in nodes if not n["is_head_node"])

        run = tmp_path / "cluster"
        job_log = open(base / "job.log", "wb")
        job = subprocess.Popen(
            ["make", "--no-print-directory", "submit", "PIPELINE=manifests/demo.yaml", f"RAY_ADDRESS={dashboard}",
             f"RUN={run}", f"INPUTS=extract={small_sample}"],
            cwd=ROOT, env=cluster_env, stdout=job_log, stderr=subprocess.STDOUT)
        job_log.close()
        # mid-stage: while the worker node's actor runs a task (Ray titles the process
        # "ray::_WorkerHost.run" during a call); its first task may come after extract, as
        # that node's first worker waits for the job's working directory to be unpacked
        _wait(lambda: worker.running_task() or job.poll() is not None, 400, "a task on the worker node", 0.02)
        assert job.poll() is None, (base / "job.log").read_text()[-3000:]
        worker.kill()
        worker.start()  # the same node comes back (a new raylet: Ray gives it a new node id)
        assert job.wait(timeout=600) == 0, (base / "job.log").read_text()[-5000:]
        back = _wait(lambda: (n := _nodes(cluster_env, dashboard)) and len(n) == 2 and n, 120, "the node back")
        assert worker_id not in {n["node_id"] for n in back}  # the restarted node joined as a new one
    finally:
        if job is not None and job.poll() is None:
            job.kill()
        for node in (worker, head):
            if node is not None:
                node.stop()
    log = (base / "job.log").read_text()
    manifests = {p.parent.name: json.loads(p.read_text()) for p in run.glob("*/_manifest.json")}
    retries = [r for m in manifests.values() for r in m.get("retries", [])]
    assert any(r["node"] == worker_id and r["attempt"] == 1 for r in retries), (retries, log[-3000:])
    assert "lost its worker" in log and "Traceback" not in log
    embedded = json.loads((ref / "extract" / "_manifest.json").read_text())["code_version"]
    assert "+" in embedded and {m["code_version"] for m in manifests.values()} == {embedded}
    assert (run / "mix" / "_SUCCESS").exists()
    ours, theirs = _data_files(run), _data_files(ref)
    assert sorted(ours) == sorted(theirs) and any(k.endswith(".bin") for k in ours)
    assert [k for k in ours if ours[k] != theirs[k]] == []
    assert not head.processes() and not worker.processes()
    shutil.rmtree(base, ignore_errors=True)


def _remove(job_pipeline: Path) -> None:
    job_pipeline.unlink()
    try:
        job_pipeline.parent.rmdir()
    except OSError:  # another submission's file
        pass


def test_submit_makes_inputs_and_run_absolute_and_ships_the_code_version(tmp_path, monkeypatch):
    import argparse

    from curate.errors import ConfigError
    from curate.runner import code_version
    from ray_jobs.submit import absolute_pipeline, build_command

    data = {"pipeline": "p", "stages": {"a": {"input": {"paths": ["data/x", "/abs/y", "s3://b/z"]}},
                                        "b": {"input": "a", "config": {"mixture": "manifests/m.yaml"}}}}
    out = absolute_pipeline(data, tmp_path, {})
    assert out["stages"]["a"]["input"]["paths"] == [str(tmp_path / "data" / "x"), "/abs/y", "s3://b/z"]
    assert out["stages"]["b"] == data["stages"]["b"] and data["stages"]["a"]["input"]["paths"][0] == "data/x"
    assert absolute_pipeline(data, tmp_path, {"a": ["/new"]})["stages"]["a"]["input"] == {"paths": ["/new"]}
    with pytest.raises(ConfigError, match="--input names no stage of the pipeline: c"):
        absolute_pipeline(data, tmp_path, {"c": ["/x"]})

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(data))
    args = argparse.Namespace(pipeline="demo.yaml", address="http://127.0.0.1:1", run="runs/r",
                              input=["a=in1", "a=/in2"], submission_id=None, no_wait=True)
    cmd, job_pipeline = build_command(args, ["--workers", "3"])
    rel = str(job_pipeline.relative_to(ROOT))
    try:
        written = yaml.safe_load(job_pipeline.read_text())
    finally:
        _remove(job_pipeline)
    assert rel.startswith(".curate-job/demo-") and rel.endswith(".yaml")
    assert written["stages"]["a"]["input"]["paths"] == [str(tmp_path / "in1"), "/in2"]
    sep = cmd.index("--")
    assert cmd[1:4] == ["job", "submit", "--address"] and "--no-wait" in cmd[:sep]
    assert cmd[cmd.index("--working-dir") + 1] == str(ROOT)
    env = json.loads(cmd[cmd.index("--runtime-env-json") + 1])
    assert env["env_vars"]["CURATE_CODE_VERSION"] == code_version() and env["env_vars"]["CURATE_NO_PROGRESS"] == "1"
    assert cmd[sep + 1:] == ["python", "-m", "curate.cli", "run", rel, "--run",
                             str(tmp_path / "runs" / "r"), "--workers", "3"]
    args.run = "s3://bucket/runs/r"
    cmd, job_pipeline = build_command(args, [])
    _remove(job_pipeline)
    assert cmd[-1] == "s3://bucket/runs/r"


def test_submit_sets_token_mode_only_when_a_token_exists(tmp_path, monkeypatch):
    from ray_jobs.submit import auth_env

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    assert "RAY_AUTH_MODE" not in auth_env({})
    token = tmp_path / "tok"
    token.write_text("x" * 64)
    assert auth_env({"RAY_AUTH_TOKEN_PATH": str(token)})["RAY_AUTH_MODE"] == "token"
    assert auth_env({"RAY_AUTH_TOKEN": "abc"})["RAY_AUTH_MODE"] == "token"
    assert auth_env({"RAY_AUTH_TOKEN": "abc", "RAY_AUTH_MODE": "disabled"})["RAY_AUTH_MODE"] == "disabled"
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("y" * 64)
    assert auth_env({})["RAY_AUTH_MODE"] == "token"
