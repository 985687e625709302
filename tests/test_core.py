"""Shard IO, configs, manifests, conservation and resume, on the local executor."""

import json
import os

import pyarrow as pa
import pytest

from curate.config import load_pipeline, parse_pipeline
from curate.errors import ConfigError, ConservationError, ShardError, StageStateError
from curate.manifest import check_conservation
from curate.runner import ShardWorker, run_pipeline
from curate.schema import check_document_table, make_rejected
from curate.shardio import read_parquet, sha256_file, write_parquet
from curate.sql import query
from tests.warcfixtures import write_warc


def test_write_parquet_is_atomic_and_checksummed(tmp_path):
    t = pa.table({"id": ["a", "b"], "text": ["x", "y"]})
    info = write_parquet(t, tmp_path / "s" / "part-00000.parquet")
    assert info["rows"] == 2 and info["sha256"] == sha256_file(info["path"])
    assert not list((tmp_path / "s").glob("*.tmp"))
    again = write_parquet(t, tmp_path / "s2" / "part-00000.parquet")
    assert again["sha256"] == info["sha256"]  # deterministic bytes


def test_malformed_parquet_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(ShardError, match="bad.parquet"):
        read_parquet(bad)


def test_make_rejected_and_schema_checks():
    t = pa.table({"id": ["a"], "text": ["x"], "url": ["u"], "domain": ["d"], "source": ["web"]})
    check_document_table(t.cast(pa.schema([pa.field("id", pa.string(), nullable=False)] + list(t.schema)[1:])))
    with pytest.raises(ValueError, match="missing core column 'url'"):
        check_document_table(t.drop_columns(["url"]))
    r = make_rejected(t, "quality", ["quality.too_short"], ["3 words"])
    assert r.column("reason").to_pylist() == ["quality.too_short"] and r.column("stage").to_pylist() == ["quality"]
    with pytest.raises(ValueError, match="not of the form"):
        make_rejected(t, "quality", ["short"])


def test_conservation_violation_is_an_error():
    check_conservation(10, 7, 3, "x")
    with pytest.raises(ConservationError, match="10 documents in, but 7 kept \\+ 2 rejected"):
        check_conservation(10, 7, 2, "x")


def test_pipeline_yaml_errors_name_key_and_file(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("pipeline: x\nstages:\n  extract:\n    input: {paths: [a]}\n    confg: {}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'stages.extract.confg' in .*p.yaml"):
        load_pipeline(p)
    with pytest.raises(ConfigError, match="reads from 'extract', which is not a stage"):
        parse_pipeline({"pipeline": "x", "stages": {"langid": {"input": "extract"}}}, "d")
    with pytest.raises(ConfigError, match="reads from 'extrct', which is not a stage; did you mean 'extract'"):
        parse_pipeline({"pipeline": "x", "stages": {"extract": {"input": {"paths": ["a"]}},
                                                    "langid": {"input": "extrct"}}}, "d")
    p.write_text(f"pipeline: x\nstages:\n  extract:\n    input: {{paths: [{tmp_path}]}}\n    config: {{bogus: 1}}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'bogus' in config of stage 'extract' of .*p.yaml"):
        run_pipeline(p, tmp_path / "run", executor="local")


def _pipeline(inp):
    return {"pipeline": "t", "executor": "local", "workers": 1,
            "stages": {"extract": {"input": {"paths": [str(inp)]}, "config": {}}}}


@pytest.fixture()
def warc_dir(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        write_warc(d / f"part-{i}.warc.gz", gz=True, corrupt_after=0 if i == 1 else None)
    return d


def _shard_bytes(stage_dir):
    return {str(p.relative_to(stage_dir)): p.read_bytes() for p in sorted(stage_dir.rglob("*.parquet"))}


def test_run_manifest_resume_and_determinism(tmp_path, warc_dir):
    run = tmp_path / "run"
    m = run_pipeline(_pipeline(warc_dir), run, log=lambda *_: None)["extract"]
    assert m["input_rows"] == m["kept_rows"] + m["rejected_rows"] == 3 * 8 + 1
    assert m["conservation"]["ok"] and m["reasons"]["extract.corrupt_record"] == 1
    assert (run / "extract" / "_SUCCESS").exists()
    disk = json.loads((run / "extract" / "_manifest.json").read_text())
    assert disk["config_hash"] == m["config_hash"] and len(disk["outputs"]) == 3
    first = _shard_bytes(run / "extract")

    # A second run is a no-op; a run with a lost shard redoes only that shard, same bytes.
    logs = []
    run_pipeline(_pipeline(warc_dir), run, log=logs.append)
    assert any("already finished" in x for x in logs)
    (run / "extract" / "_SUCCESS").unlink()
    (run / "extract" / "part-00001.parquet").unlink()
    logs.clear()
    run_pipeline(_pipeline(warc_dir), run, log=logs.append)
    assert any("2 of 3 shards already done" in x for x in logs)
    assert _shard_bytes(run / "extract") == first

    # Same input in another run directory: byte-identical shards.
    run_pipeline(_pipeline(warc_dir), tmp_path / "run2", log=lambda *_: None)
    assert _shard_bytes(tmp_path / "run2" / "extract") == first

    # A changed config on a finished stage is refused unless forced.
    changed = _pipeline(warc_dir)
    changed["stages"]["extract"]["config"] = {"min_text_chars": 50}
    with pytest.raises(StageStateError, match="--force"):
        run_pipeline(changed, run, log=lambda *_: None)
    m2 = run_pipeline(changed, run, force=True, log=lambda *_: None)["extract"]
    assert m2["config"]["min_text_chars"] == 50


def test_sql_views(tmp_path, warc_dir):
    run = tmp_path / "run"
    run_pipeline(_pipeline(warc_dir), run, log=lambda *_: None)
    cols, rows = query(run, "SELECT reason, count(*) FROM extract_rejected GROUP BY 1 ORDER BY 1")
    assert dict(rows)["extract.http_status"] == 3
    _, rows = query(run, "SELECT count(*) FROM extract")
    _, funnel = query(run, "SELECT docs FROM funnel WHERE stage='extract' AND reason='(kept)'")
    assert rows[0][0] == funnel[0][0] > 0


def test_worker_refuses_a_stage_that_loses_documents(tmp_path, warc_dir):
    w = ShardWorker("extract", {}, "extract", str(tmp_path / "out"))

    def lossy(path, real=w.stage.process_source):
        res = real(path)
        res.rejected = res.rejected.slice(1)
        return res

    w.stage.process_source = lossy
    src = str(warc_dir / "part-0.warc.gz")
    with pytest.raises(ConservationError):
        w({"index": 0, "input": src, "input_sha": sha256_file(src)})
    assert not (tmp_path / "out" / "part-00000.parquet").exists()
