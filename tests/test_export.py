"""curate export: JSONL / Parquet / chat messages from a run, checked against the shards
read back with pyarrow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.export import ExportError, export_stage
from curate.runner import run_pipeline

TURN = pa.struct([("role", pa.string()), ("content", pa.string()), ("name", pa.string())])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run whose read stage holds two shards of chats (messages as list<struct>) plus a
    JSONL shard whose messages are JSON text."""
    base = tmp_path_factory.mktemp("export")
    corpus = base / "corpus"
    corpus.mkdir()
    chats = [[{"role": "user", "content": f"Frage {i}: wie spät ist es? 🕐", "name": None},
              {"role": "assistant", "content": f"Antwort {i}", "name": "bot" if i % 2 else None}] for i in range(12)]
    t = pa.table({
        "text": [f"Dokument {i} – “quoted” \u2028 sep" if i != 5 else "" for i in range(12)],
        "messages": pa.array(chats, pa.list_(TURN)),
        "score": [float("nan") if i == 3 else i / 4 for i in range(12)],
    })
    pq.write_table(t.slice(0, 7), corpus / "a.parquet")
    pq.write_table(t.slice(7), corpus / "b.parquet")
    spec = {"pipeline": "t", "executor": "local", "stages": {
        "read": {"input": {"paths": [str(corpus)]}, "config": {"keep_columns": ["messages", "score"]}}}}
    run_pipeline(spec, base / "run", log=lambda m: None)
    j = base / "jcorpus"
    j.mkdir()
    (j / "c.jsonl").write_text("".join(json.dumps({"text": "t", "id": f"c{i}", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"}]}) + "\n" for i in range(3)))
    spec = {"pipeline": "t", "executor": "local", "stages": {
        "chats": {"type": "read", "input": {"paths": [str(j)]},
                  "config": {"columns": {"text": "text", "id": "id"}, "keep_columns": {"messages": "json"}}}}}
    run_pipeline(spec, base / "run", log=lambda m: None)
    return base / "run"


def _shards(run: Path, stage: str, rejected: bool = False) -> pa.Table:
    d = run / stage / "rejected" if rejected else run / stage
    return pa.concat_tables([pq.read_table(f) for f in sorted(d.glob("part-*.parquet"))])


def _same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return b is None
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_jsonl_matches_the_shards_row_for_row(run, tmp_path):
    out = tmp_path / "read.jsonl"
    res = export_stage(run, "read", "jsonl", out=out)
    expected = _shards(run, "read").to_pylist()
    raw = out.read_bytes()
    lines = raw.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(expected) == res["rows"] == 11
    got = [json.loads(ln) for ln in lines[:-1]]
    assert all(_same(e, g) for e, g in zip(expected, got))
    assert got[3]["score"] is None, "NaN is written as null (JSON has no NaN)"
    assert "“quoted”".encode() in raw and b"\\u" not in raw.replace(b"\\u2028", b""), "UTF-8, not escapes"
    assert list(got[0]) == _shards(run, "read").column_names
    assert not list(tmp_path.glob("*.tmp"))
    again = tmp_path / "again.jsonl"
    export_stage(run, "read", "jsonl", out=again)
    assert again.read_bytes() == raw


def test_columns_subset_order_and_rejected(run, tmp_path):
    out = tmp_path / "x.jsonl"
    export_stage(run, "read", "jsonl", columns=["score", "id"], out=out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [list(r) for r in rows[:1]] == [["score", "id"]]
    assert [r["id"] for r in rows] == _shards(run, "read").column("id").to_pylist()
    rej = tmp_path / "rej.jsonl"
    res = export_stage(run, "read", "jsonl", rejected=True, columns=["id", "reason", "detail"], out=rej)
    rows = [json.loads(x) for x in rej.read_text().splitlines()]
    assert res["rows"] == len(rows) == _shards(run, "read", rejected=True).num_rows == 1
    assert rows[0]["reason"] == "read.empty_text"


def test_parquet_equals_concatenated_shards(run, tmp_path):
    out = tmp_path / "read.parquet"
    res = export_stage(run, "read", "parquet", columns=["id", "text", "messages"], out=out)
    got = pq.read_table(out)
    assert res["rows"] == got.num_rows
    assert got.equals(_shards(run, "read").select(["id", "text", "messages"]))
    again = tmp_path / "again.parquet"
    export_stage(run, "read", "parquet", columns=["id", "text", "messages"], out=again)
    assert again.read_bytes() == out.read_bytes()


def test_messages_from_struct_lists_and_from_json_text(run, tmp_path):
    out = tmp_path / "chat.jsonl"
    export_stage(run, "read", "messages", out=out)
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 11 and all(list(r) == ["messages"] for r in rows)
    assert rows[0]["messages"] == [{"role": "user", "content": "Frage 0: wie spät ist es? 🕐"},
                                   {"role": "assistant", "content": "Antwort 0"}]
    assert rows[1]["messages"][1] == {"role": "assistant", "content": "Antwort 1", "name": "bot"}
    out2 = tmp_path / "chat2.jsonl"
    export_stage(run, "chats", "messages", columns=["id"], out=out2)
    rows = [json.loads(x) for x in out2.read_text().splitlines()]
    assert rows[2] == {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q2"}],
                       "id": "c2"}


def test_clear_errors(run, tmp_path):
    with pytest.raises(ExportError, match="did you mean 'read'"):
        export_stage(run, "raed")
    with pytest.raises(ExportError, match="unknown column 'scroe'.*did you mean 'score'"):
        export_stage(run, "read", columns=["scroe"])
    with pytest.raises(ExportError, match="unknown export format"):
        export_stage(run, "read", "csv")
    (run / "half").mkdir(exist_ok=True)
    with pytest.raises(ExportError, match="has not finished"):
        export_stage(run, "half")
    cli = CliRunner()
    res = cli.invoke(app, ["export", str(run), "raed"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "did you mean 'read'" in res.output
    chats = run.parent / "plain"
    chats.mkdir()
    (chats / "p.jsonl").write_text('{"text": "no chats here"}\n')
    spec = {"pipeline": "t", "executor": "local", "stages": {"plain": {"type": "read",
                                                                       "input": {"paths": [str(chats)]}}}}
    run_pipeline(spec, run, log=lambda m: None)
    with pytest.raises(ExportError, match="no 'messages' column"):
        export_stage(run, "plain", "messages")


def test_cli_stdout_and_default_path(run):
    cli = CliRunner()
    res = cli.invoke(app, ["export", str(run), "read", "--columns", "id,score", "--out", "-"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["id"] for r in rows] == _shards(run, "read").column("id").to_pylist()
    res = cli.invoke(app, ["export", str(run), "read", "--format", "parquet", "--rejected"])
    assert res.exit_code == 0, res.output
    assert pq.read_table(run / "exports" / "read.rejected.parquet").num_rows == 1
