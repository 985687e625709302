"""Storage URIs end to end against a real S3-protocol server (moto's standalone server) that the
test starts on loopback: inputs and the run directory on ``s3://``, a run killed mid-stage and
resumed twice from empty local mirrors (another machine), outputs byte-identical to a local run.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import xxhash
import yaml

from curate import storage
from curate.errors import ConfigError
from curate.pipeline import Pipeline
from curate.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "curate-test"
KEY, SECRET = "testing-key", "testing-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (a subprocess of this test), a bucket, and the AWS_*
    environment that points curate at it; yields that environment."""
    pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    home = tmp_path_factory.mktemp("aws")
    port = _free_port()
    log = open(home / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    env = {
        "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"moto server exited: {(home / 'moto.log').read_text()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not listen within 60 s"
                time.sleep(0.2)
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            storage._FS.clear()
            pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key=KEY, secret_key=SECRET,
                              region="us-east-1", allow_bucket_creation=True).create_dir(BUCKET)
            yield env
            storage._FS.clear()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def small_crawl(tmp_path_factory) -> Path:
    samplegen = pytest.importorskip("samples.samplegen")
    out = tmp_path_factory.mktemp("crawl") / "sample"
    samplegen.generate(out, seed=0, shards=3, scale=0.2)
    return out


def _upload_tree(local: Path, uri: str) -> None:
    for p in sorted(local.rglob("*")):
        if p.is_file():
            storage.upload(p, storage.join(uri, p.relative_to(local).as_posix()))


def _remote_files(uri: str) -> dict[str, bytes]:
    out = {}
    for f in storage.list_files(uri):
        with storage.open_input(f) as s:
            out[f[len(uri) + 1:]] = s.read()
    return out


def _data_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """Shards, kept and rejected (manifests and markers hold timings and paths)."""
    return {k: v for k, v in files.items() if k.endswith(".parquet")}


def _pipeline(inputs: str) -> dict:
    return {
        "pipeline": "s3-test", "executor": "local", "workers": 1,
        "stages": {
            "extract": {"input": {"paths": [inputs]},
                        "config": {"default_source": "web", "source_by_domain": {"wiki.example.org": "wiki"}}},
            "langid": {"input": "extract", "config": {"min_score": 0.5}},
            "dedup": {"input": "langid", "config": {}},
        },
    }


def _cli(args: list[str], env: dict, cache: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env, CURATE_CACHE=str(cache), CURATE_NO_PROGRESS="1")
    full.pop("CURATE_FAULT", None)
    if fault:
        full["CURATE_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)


def _manifest(run: str, stage: str) -> dict:
    with storage.open_input(storage.join(run, stage, "_manifest.json")) as f:
        return json.loads(f.read())


def test_s3_inputs_and_run_dir_killed_and_resumed_on_empty_mirrors(s3, small_crawl, tmp_path):
    crawl, run = f"s3://{BUCKET}/crawl", f"s3://{BUCKET}/runs/kill-resume"
    _upload_tree(small_crawl, crawl)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump(_pipeline(crawl)))
    cmd = ["run", str(pipeline), "--run", run, "--executor", "local"]

    # 1. killed in langid after 2 of its 4 shards were recorded
    first = _cli(cmd, s3, tmp_path / "mirror-1", fault="kill:langid:shards:2")
    assert first.returncode == -9, first.stdout + first.stderr
    remote = _remote_files(run)
    assert "extract/_SUCCESS" in remote and "langid/_SUCCESS" not in remote
    markers = sorted(k for k in remote if k.startswith("langid/_shards/"))
    assert markers == ["langid/_shards/part-00000.json", "langid/_shards/part-00001.json"]
    for m in markers:  # a marker on S3 names outputs that are there, with the recorded bytes
        for f in json.loads(remote[m])["result"]["files"]:
            data = remote[f"langid/{f['path']}"]
            assert len(data) == f["bytes"] and xxhash.xxh3_128_hexdigest(data) == f["xxh3"]

    # 2. another machine (empty mirror): extract and 2 langid shards are not redone; killed in
    #    dedup's last phase after 2 of its 4 shards
    second = _cli(cmd, s3, tmp_path / "mirror-2", fault="kill:dedup:filter:2")
    assert second.returncode == -9, second.stdout + second.stderr
    assert "[extract] already finished: skipped" in second.stdout
    assert "[langid] resuming: 2 of 4 shards already done" in second.stdout
    assert _manifest(run, "langid")["resumed"] == {"shards": 2}
    assert not any(k.startswith("dedup/") and k.endswith("_SUCCESS") for k in _remote_files(run))

    # 3. a third empty mirror finishes the run, redoing only the 2 unrecorded dedup shards
    third = _cli(cmd, s3, tmp_path / "mirror-3")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "[extract] already finished: skipped" in third.stdout
    assert "[langid] already finished: skipped" in third.stdout
    assert f"funnel: {run}" in third.stdout  # curate run ends with curate inspect, read from the mirror
    dedup = _manifest(run, "dedup")
    parts = dedup["lsh"]["partitions"]
    assert dedup["resumed"] == {"signature": 4, "bucket": parts, "verify": parts, "components": 1, "filter": 2}
    assert dedup["inputs"][0]["path"] == f"{run}/langid/part-00000.parquet"  # URIs, not mirror paths

    # the same pipeline on the local copy of the crawl into a local run directory
    local_dir = tmp_path / "local-run"
    local = run_pipeline(_pipeline(str(small_crawl)), local_dir, log=lambda *_: None)
    want = {p.relative_to(local_dir).as_posix(): p.read_bytes() for p in local_dir.rglob("*.parquet")}
    remote = _remote_files(run)
    got = _data_files(remote)
    assert sorted(got) == sorted(want) and len(got) == 3 * 4 * 2
    assert [k for k in got if got[k] != want[k]] == []
    assert not [k for k in remote if "/_work/" in k or k.endswith(".tmp")]
    for stage in ("extract", "langid", "dedup"):
        remote_m, local_m = _manifest(run, stage), local[stage]
        assert {k: remote_m[k] for k in ("input_rows", "kept_rows", "rejected_rows", "reasons")} == \
               {k: local_m[k] for k in ("input_rows", "kept_rows", "rejected_rows", "reasons")}

    # curate sql on the S3 run, from yet another empty mirror
    q = _cli(["sql", "SELECT count(*) AS n FROM dedup", "--run", run, "--format", "csv"], s3, tmp_path / "mirror-4")
    assert q.returncode == 0, q.stderr
    assert q.stdout.split() == ["n", str(local["dedup"]["kept_rows"])]


def test_validate_checks_uri_inputs(s3, small_crawl):
    _upload_tree(small_crawl / "html", f"s3://{BUCKET}/validate/html")
    ok = Pipeline("v", executor="local").add("extract", input={"paths": [f"s3://{BUCKET}/validate/html"]})
    assert [p.name for p in ok.validate()] == ["extract"]
    bad = Pipeline("v", executor="local").add("extract", input={"paths": [f"s3://{BUCKET}/validate/nothing-here"]})
    with pytest.raises(ConfigError, match="input path not found: s3://curate-test/validate/nothing-here"):
        bad.validate()


def test_extract_points_text_corpora_on_s3_at_read(s3, tmp_path):
    from stages.extract import Extract

    (tmp_path / "dump.jsonl").write_text('{"text": "already text"}\n')
    storage.upload(tmp_path / "dump.jsonl", f"s3://{BUCKET}/text-only/dump.jsonl")
    stage = Extract(Extract.Config(), "extract")
    with pytest.raises(ConfigError, match=r"no WARC files or HTML folders under s3://.*found dump.jsonl.*`read`"):
        stage.list_inputs([f"s3://{BUCKET}/text-only"])
    with pytest.raises(ConfigError, match=r"not dump.jsonl: .*`read` stage"):
        stage.list_inputs([f"s3://{BUCKET}/text-only/dump.jsonl"])


def test_mirror_moves_only_what_changed(s3, tmp_path, monkeypatch):
    uri = f"s3://{BUCKET}/runs/mirror"
    a = storage.RemoteRun(uri, tmp_path / "a")
    stage = a.local / "st"
    (stage / "_shards").mkdir(parents=True)
    (stage / "part-00000.parquet").write_bytes(b"data-0")
    (stage / "_shards" / "part-00000.json").write_text("{}")
    (stage / "_SUCCESS").write_text("done")
    a.sync(stage)
    assert sorted(storage.list_files(uri)) == [f"{uri}/st/_SUCCESS", f"{uri}/st/_shards/part-00000.json",
                                               f"{uri}/st/part-00000.parquet"]
    downloads: list[str] = []
    real = storage.download

    def counted(u: str, dest: Path) -> Path:
        downloads.append(u[len(uri) + 1:])
        return real(u, dest)

    monkeypatch.setattr(storage, "download", counted)
    b = storage.RemoteRun(uri, tmp_path / "b")
    b.pull(["st"])
    assert sorted(downloads) == ["st/_SUCCESS", "st/_shards/part-00000.json", "st/part-00000.parquet"]
    assert (b.local / "st" / "part-00000.parquet").read_bytes() == b"data-0"
    downloads.clear()
    b.close()
    storage.RemoteRun(uri, tmp_path / "b").pull(["st"])  # index on disk: nothing moves
    assert downloads == []
    # a.local changes one file and removes another; b's pull brings exactly that
    time.sleep(1.1)  # object stores keep modification times in whole seconds
    (stage / "part-00000.parquet").write_bytes(b"data-1")
    (stage / "_SUCCESS").unlink()
    (b.local / "st" / "stray.tmp").write_text("left by a killed run")
    a.sync(stage)
    assert f"{uri}/st/_SUCCESS" not in storage.list_files(uri)
    b = storage.RemoteRun(uri, tmp_path / "b")
    b.pull(["st"])
    assert downloads == ["st/part-00000.parquet"]
    assert sorted(p.relative_to(b.local).as_posix() for p in (b.local / "st").rglob("*") if p.is_file()) == \
           ["st/_shards/part-00000.json", "st/part-00000.parquet"]
    assert (b.local / "st" / "part-00000.parquet").read_bytes() == b"data-1"


def test_read_stage_on_s3(s3, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "web").mkdir(parents=True)
    lines = [json.dumps({"text": f"document number {i} has some words"}) for i in range(5)] + ["{not json"]
    (corpus / "web" / "a.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    pq.write_table(pa.table({"text": ["a parquet row", "another parquet row"]}), corpus / "b.parquet")
    (corpus / "_notes.jsonl").write_text('{"text": "skipped: underscore names are not inputs"}\n')
    uri = f"s3://{BUCKET}/read-corpus"
    _upload_tree(corpus, uri)

    def run(inputs: str, out: Path) -> tuple[dict, pa.Table]:
        spec = {"pipeline": "r", "executor": "local", "workers": 1,
                "stages": {"read": {"input": {"paths": [inputs]}, "config": {}}}}
        m = run_pipeline(spec, out, log=lambda *_: None)["read"]
        return m, pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("read/part-*.parquet")))

    m_s3, kept_s3 = run(uri, tmp_path / "run-s3")
    m_local, kept_local = run(str(corpus), tmp_path / "run-local")
    assert (m_s3["input_rows"], m_s3["kept_rows"], m_s3["reasons"]) == (8, 7, {"read.bad_json": 1})
    assert (m_local["input_rows"], m_local["kept_rows"], m_local["reasons"]) == (8, 7, {"read.bad_json": 1})
    assert kept_s3.column("text").to_pylist() == kept_local.column("text").to_pylist()
    assert sorted(set(kept_s3.column("input_file").to_pylist())) == [f"{uri}/b.parquet", f"{uri}/web/a.jsonl.gz"]


def test_fsspec_file_system(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    mem.pipe("/curate-fsspec/in/x.txt", b"hello")
    mem.pipe("/curate-fsspec/in/sub/y.txt", b"world")
    assert storage.list_files("memory://curate-fsspec/in") == ["memory://curate-fsspec/in/sub/y.txt",
                                                               "memory://curate-fsspec/in/x.txt"]
    assert storage.kind("memory://curate-fsspec/in") == "dir"
    assert storage.sha256("memory://curate-fsspec/in/x.txt") == __import__("hashlib").sha256(b"hello").hexdigest()
    with storage.local_copy("memory://curate-fsspec/in/sub") as local:
        assert local.name == "sub" and (local / "y.txt").read_bytes() == b"world"
    assert not local.exists()
    run = storage.RemoteRun("memory://curate-fsspec/run", tmp_path / "m")
    (run.local / "s").mkdir()
    (run.local / "s" / "f.bin").write_bytes(b"payload")
    run.sync(run.local / "s")
    assert mem.cat("/curate-fsspec/run/s/f.bin") == b"payload"
    other = storage.RemoteRun("memory://curate-fsspec/run", tmp_path / "n")
    other.pull(["s"])
    assert (other.local / "s" / "f.bin").read_bytes() == b"payload"
