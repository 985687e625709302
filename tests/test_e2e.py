"""End to end on the generated sample crawl: extract on both executors, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]


def _spec(corpus, executor="local", workers=1):
    return {"pipeline": "e2e", "executor": executor, "workers": workers,
            "stages": {"extract": {"input": {"paths": [str(corpus)]}}}}


def _bytes(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def local_run(sample_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("local")
    m = run_pipeline(_spec(sample_corpus), run, log=lambda *_: None)["extract"]
    return run, m


def test_every_record_accounted_for(sample_corpus, local_run):
    run, m = local_run
    labels = [json.loads(x) for x in (sample_corpus / "labels.jsonl").read_text().splitlines() if x.strip()]
    assert m["input_rows"] == m["kept_rows"] + m["rejected_rows"]
    assert m["kept_rows"] > 0.5 * m["input_rows"]
    kinds = {lab.get("kind") for lab in labels}
    # planted malformed and non-HTML records are rejected with their own reasons
    if "non_html" in kinds:
        assert m["reasons"].get("extract.non_html", 0) > 0
    if "http_error" in kinds:
        assert m["reasons"].get("extract.http_status", 0) > 0
    if "oversize" in kinds:
        assert m["reasons"].get("extract.oversize", 0) > 0
    if "truncated" in kinds or "corrupt" in kinds:
        assert m["reasons"].get("extract.corrupt_record", 0) > 0


@pytest.mark.ray
def test_ray_two_workers_byte_identical(sample_corpus, local_run, tmp_path):
    run, _ = local_run
    run_pipeline(_spec(sample_corpus, "ray", 2), tmp_path / "ray", log=lambda *_: None)
    assert _bytes(tmp_path / "ray" / "extract") == _bytes(run / "extract")


def test_killed_run_resumes_to_identical_bytes(sample_corpus, local_run, tmp_path):
    run, _ = local_run
    spec = tmp_path / "p.yaml"
    spec.write_text(json.dumps(_spec(sample_corpus)))  # JSON is YAML
    target = tmp_path / "killed"
    cmd = [sys.executable, "-m", "curate.cli", "run", str(spec), "--run", str(target)]
    env = {**os.environ, "CURATE_NO_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker = target / "extract" / "_shards" / "part-00000.json"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list((target / "extract" / "_shards").glob("*.json"))
    assert not (target / "extract" / "_SUCCESS").exists(), "run finished before it could be killed"
    n_shards = len(list(sample_corpus.glob("*.warc.gz")))
    assert 1 <= len(done) < n_shards
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(done)} of" in res.stdout and "already done" in res.stdout
    assert _bytes(target / "extract") == _bytes(run / "extract")
    assert not list((target / "extract").rglob("*.tmp"))


def test_cli_sql_and_inspect(local_run):
    run, m = local_run
    cli = CliRunner()
    r = cli.invoke(app, ["sql", "SELECT reason, count(*) AS n FROM extract_rejected GROUP BY 1 ORDER BY 1",
                         "--run", str(run), "--format", "csv"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0] == "reason,n"
    assert sum(int(x.split(",")[1]) for x in lines[1:]) == m["rejected_rows"]
    r = cli.invoke(app, ["inspect", str(run)])
    assert r.exit_code == 0 and "extract" in r.output and str(m["kept_rows"]) in r.output
    r = cli.invoke(app, ["sql", "SELECT * FROM nope", "--run", str(run)])
    assert r.exit_code == 2 and "views in this run" in r.output
