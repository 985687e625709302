"""curate.readers: every record as the file holds it, bad ones as error records, no traceback.

Expected counts are computed from the bytes the test wrote (or from the Parquet footer),
never by the reader under test.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.readers import ReaderError, detect_format, error_kind, iter_records
from stages.read import Read, ReadConfig

def _fuzz(default: int):
    """Hypothesis settings of a fuzz test: ``default`` fixed (derandomized) examples in
    ``make test``; ``CURATE_FUZZ_EXAMPLES`` random ones when set (as tests/test_fuzz.py)."""
    n = int(os.environ.get("CURATE_FUZZ_EXAMPLES", "0") or 0)
    return settings(max_examples=n or default, deadline=None, derandomize=not n, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


SHARED_SFT = Path(__file__).resolve().parents[2] / "shared" / "sft" / "llama_factory" / "alpaca_en_demo.json"


def _docs(n: int, start: int = 0) -> list[dict]:
    return [{"text": f"document {i} – ünïcode ✓ " + "x" * (i % 7), "n": i} for i in range(start, start + n)]


def _jsonl(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()


def _records(path, **kw):
    recs = list(iter_records(path, **kw))
    assert [r.index for r in recs] == list(range(len(recs)))
    for r in recs:
        assert (r.value is None) == (r.error is not None)
    return recs


def test_formats_from_names(tmp_path):
    (tmp_path / "d").mkdir()
    cases = {"a.jsonl": "jsonl", "a.JSONL.GZ": "jsonl", "a.ndjson.zst": "jsonl", "a.json": "json",
             "a.json.gz": "json", "a.parquet": "parquet", "data-00000-of-00001.arrow": "arrow",
             "a.parquet.gz": None, "README.md": None, "d": "hf"}
    for name, fmt in cases.items():
        assert detect_format(tmp_path / name) == fmt, name


def test_jsonl_bad_lines_bom_crlf_blank(tmp_path):
    good = _docs(5)
    lines = [json.dumps(good[0]).encode(), b"", json.dumps(good[1]).encode(), b"{not json",
             b"[1, 2]", b"\xff\xfe broken utf-8", b'{"text": "\\ud800 lone surrogate"}', b"   ",
             json.dumps(good[2]).encode(), b"x" * 300, json.dumps(good[3]).encode()]
    body = b"\xef\xbb\xbf" + b"\r\n".join(lines) + b"\r\n" + json.dumps(good[4]).encode()  # no final newline
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(body)
    expected_records = sum(1 for ln in body.split(b"\n") if ln.strip(b" \r\n\xef\xbb\xbf"))
    recs = _records(p, max_record_bytes=200)
    assert len(recs) == expected_records == 10
    kinds = [error_kind(r.error) if r.error else "ok" for r in recs]
    assert kinds == ["ok", "ok", "bad_json", "not_object", "bad_encoding", "bad_encoding", "ok", "too_long", "ok",
                     "ok"]
    assert [r.value for r in recs if r.value] == good
    assert "line 4" in recs[2].error  # physical line numbers in the message


def test_empty_and_blank_files(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_bytes(b"\n\n  \r\n")
    (tmp_path / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "empty.json").write_bytes(b"[]")
    (tmp_path / "nothing.json").write_bytes(b"   ")
    for name in ("empty.jsonl", "blank.jsonl", "empty.jsonl.gz", "empty.json", "nothing.json"):
        assert _records(tmp_path / name) == [], name


def test_gzip_zstd_same_records_as_plain(tmp_path):
    docs = _docs(500)
    data = _jsonl(docs)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(data))
    # several gzip members and several zstd frames, as concatenating tools write them
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(data[:1000].rsplit(b"\n", 1)[0] + b"\n")
                                          + gzip.compress(data[len(data[:1000].rsplit(b"\n", 1)[0]) + 1:]))
    cz = zstandard.ZstdCompressor()
    (tmp_path / "a.jsonl.zst").write_bytes(cz.compress(data[:5000]) + cz.compress(data[5000:]))
    for name in ("a.jsonl.gz", "m.jsonl.gz", "a.jsonl.zst"):
        recs = _records(tmp_path / name)
        assert [r.value for r in recs] == docs, name


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.93])
def test_truncated_gzip_yields_every_complete_line_then_one_error(tmp_path, cut):
    data = _jsonl(_docs(3000))
    gz = gzip.compress(data)
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(gz[: int(len(gz) * cut)])
    d = zlib.decompressobj(wbits=31)
    avail = d.decompress(gz[: int(len(gz) * cut)])
    complete = avail.count(b"\n")
    recs = _records(p)
    assert len(recs) == complete + 1
    assert all(r.error is None for r in recs[:-1])
    assert error_kind(recs[-1].error) == "truncated"


def test_truncated_zstd_frames(tmp_path):
    docs = _docs(1000)
    cz = zstandard.ZstdCompressor()
    frames = [cz.compress(_jsonl(docs[i:i + 100])) for i in range(0, 1000, 100)]
    p = tmp_path / "cut.jsonl.zst"
    p.write_bytes(b"".join(frames[:4]) + frames[4][: len(frames[4]) // 2])
    recs = _records(p)
    # the four whole frames hold 400 lines; whatever of frame 5 decodes is whole lines too
    assert 400 <= len(recs) - 1 < 500
    assert [r.value for r in recs[:-1]] == docs[: len(recs) - 1]
    assert error_kind(recs[-1].error) == "truncated"


def test_corrupt_gzip_never_raises(tmp_path):
    data = _jsonl(_docs(2000))
    gz = bytearray(gzip.compress(data))
    mid = len(gz) // 2
    gz[mid:mid + 64] = bytes(64)
    p = tmp_path / "bad.jsonl.gz"
    p.write_bytes(bytes(gz))
    recs = _records(p)
    assert recs[-1].error is not None
    assert error_kind(recs[-1].error) in ("corrupt", "truncated", "bad_json", "bad_encoding")
    ok = [r.value for r in recs if r.value is not None]
    assert ok[:10] == _docs(10)
    assert len(recs) < 2000 + 1


def test_json_array_streamed_across_chunks(tmp_path):
    # > 1 MiB so elements straddle the reader's text window; strings hold brackets and commas
    docs = [{"text": f"[{i}], {{not a brace}} \"quoted\" " + "y" * 600, "i": i} for i in range(2500)]
    elems = [*docs[:1000], 7, "str", [1, 2], *docs[1000:]]
    p = tmp_path / "arr.json"
    p.write_text(json.dumps(elems, indent=1, ensure_ascii=False), encoding="utf-8")
    assert p.stat().st_size > 1 << 20
    recs = _records(p)
    assert len(recs) == len(elems)
    assert [error_kind(recs[i].error) for i in (1000, 1001, 1002)] == ["not_object"] * 3
    assert [r.value for r in recs if r.value is not None] == docs


def test_json_array_damage(tmp_path):
    (tmp_path / "syntax.json").write_text('[{"text": "a"}, {"text": "b"} {"text": "c"}, {"text": "d"}]')
    (tmp_path / "open.json").write_text('[{"text": "a"}, {"text": "b"},')
    (tmp_path / "cut.json").write_text('[{"text": "a"}, {"text": "b')
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf[{"text": "a"}]')
    (tmp_path / "lines.json").write_text('{"text": "a"}\n{"text": "b"}\n')  # JSONL named .json
    (tmp_path / "one.json").write_text(json.dumps({"text": "a", "meta": {"k": [1, 2]}}, indent=2))
    names = ("syntax.json", "open.json", "cut.json", "bom.json", "lines.json", "one.json")
    got = {n: _records(tmp_path / n) for n in names}
    assert [r.value for r in got["one.json"]] == [{"text": "a", "meta": {"k": [1, 2]}}], "one pretty-printed object"
    assert [r.value for r in got["syntax.json"][:2]] == [{"text": "a"}, {"text": "b"}]
    assert len(got["syntax.json"]) == 3 and error_kind(got["syntax.json"][2].error) == "bad_json"
    assert len(got["open.json"]) == 3 and got["open.json"][2].error
    assert len(got["cut.json"]) == 2 and error_kind(got["cut.json"][1].error) == "bad_json"
    assert [r.value for r in got["bom.json"]] == [{"text": "a"}]
    assert [r.value for r in got["lines.json"]] == [{"text": "a"}, {"text": "b"}]


def test_parquet_row_groups_columns_and_a_corrupt_row_group(tmp_path):
    t = pa.table({"text": [f"document number {i} " * 20 for i in range(300)], "id": list(range(300)),
                  "extra": [[i] for i in range(300)]})
    p = tmp_path / "rg.parquet"
    pq.write_table(t, p, row_group_size=100, compression="zstd")
    recs = _records(p, columns=["text", "id"], batch_rows=7)
    assert len(recs) == pq.ParquetFile(p).metadata.num_rows
    assert recs[123].value == {"text": t["text"][123].as_py(), "id": 123}
    col = pq.ParquetFile(p).metadata.row_group(1).column(0)
    b = bytearray(p.read_bytes())
    start = (col.dictionary_page_offset or col.data_page_offset) + 40
    b[start:start + 30] = b"\xff" * 30
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(b))
    recs = _records(bad)
    assert len(recs) == 300
    assert all(r.error for r in recs[100:200]) and error_kind(recs[150].error) == "corrupt"
    assert [r.value["id"] for r in recs[:100] + recs[200:]] == list(range(100)) + list(range(200, 300))


def test_not_parquet_at_all(tmp_path):
    p = tmp_path / "junk.parquet"
    p.write_bytes(b"this is not parquet")
    recs = _records(p)
    assert len(recs) == 1 and error_kind(recs[0].error) == "corrupt"


def _write_stream(path: Path, table: pa.Table, chunk: int) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table, max_chunksize=chunk)


def test_arrow_stream_file_and_datasets_folders(tmp_path):
    t = pa.table({"text": [f"t{i}" for i in range(50)], "meta": [{"url": f"u{i}"} for i in range(50)]})
    _write_stream(tmp_path / "s.arrow", t, 8)
    with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t, max_chunksize=8)
    for name in ("s.arrow", "f.arrow"):
        recs = _records(tmp_path / name, columns=["text", "meta.url"])
        assert [r.value for r in recs] == t.to_pylist(), name
    # a save_to_disk folder of two data files, listed in state.json order
    ds = tmp_path / "ds"
    ds.mkdir()
    _write_stream(ds / "data-00001-of-00002.arrow", t.slice(30), 8)
    _write_stream(ds / "data-00000-of-00002.arrow", t.slice(0, 30), 8)
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00002.arrow"},
                                                               {"filename": "data-00001-of-00002.arrow"}],
                                               "_fingerprint": "x", "_split": None}))
    (ds / "dataset_info.json").write_text("{}")
    recs = _records(ds)
    assert [r.value["text"] for r in recs] == [f"t{i}" for i in range(50)]


def test_truncated_arrow_stream(tmp_path):
    t = pa.table({"text": [f"t{i}" * 50 for i in range(100)]})
    p = tmp_path / "s.arrow"
    _write_stream(p, t, 10)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])
    recs = _records(p)
    assert recs[-1].error and error_kind(recs[-1].error) == "corrupt"
    assert [r.value["text"] for r in recs[:-1]] == [f"t{i}" * 50 for i in range(len(recs) - 1)]


def test_missing_unknown_and_unreadable(tmp_path):
    with pytest.raises(ReaderError, match="not found"):
        list(iter_records(tmp_path / "nope.jsonl"))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ReaderError, match="unknown format"):
        list(iter_records(tmp_path / "x.txt"))
    assert [r.value for r in iter_records(tmp_path / "x.txt", "jsonl")] == [None]
    os.symlink(tmp_path / "gone.jsonl", tmp_path / "dangling.jsonl")
    recs = _records(tmp_path / "dangling.jsonl")
    assert len(recs) == 1 and error_kind(recs[0].error) == "unreadable"
    (tmp_path / "notads").mkdir()
    recs = _records(tmp_path / "notads")
    assert len(recs) == 1 and error_kind(recs[0].error) == "unreadable"


def test_real_alpaca_json_array():
    if not SHARED_SFT.is_file():
        pytest.skip("../shared is absent (fresh clone): skipped")
    expected = json.loads(SHARED_SFT.read_text(encoding="utf-8"))
    recs = _records(SHARED_SFT)
    assert [r.value for r in recs] == expected


def _count_plain(data: bytes) -> int:
    """Records of a JSONL byte string by the format's rule: non-blank lines."""
    lines = data.split(b"\n")
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    return sum(1 for ln in lines if ln.strip())


_LINE = st.one_of(
    st.builds(lambda t: json.dumps({"text": t}, ensure_ascii=False).encode(), st.text(max_size=40)),
    st.binary(max_size=30),
    st.sampled_from([b"", b"  ", b"\r", b"[1]", b"null", b'{"text": 1}', b"\xef\xbb\xbf{}", b"{\"a\": \"\\ud800\"}"]),
)


@_fuzz(80)
@given(lines=st.lists(_LINE, max_size=25), crlf=st.booleans(), gz=st.booleans(), cut=st.floats(0, 1))
def test_fuzz_jsonl_counts_match_the_bytes(tmp_path, lines, crlf, gz, cut):
    """Whatever the bytes: no exception, contiguous indices, and as many records as the file
    holds (for a cut gzip file: its complete lines plus one record for the lost tail)."""
    data = (b"\r\n" if crlf else b"\n").join(lines)
    p = tmp_path / ("f.jsonl.gz" if gz else "f.jsonl")
    if gz:
        blob = gzip.compress(data)
        blob = blob[: max(2, int(len(blob) * cut))] if cut < 0.98 else blob
        p.write_bytes(blob)
        d = zlib.decompressobj(wbits=31)
        avail = d.decompress(blob)
        if d.eof:
            expected = _count_plain(avail)
        else:
            expected = _count_plain(avail[: avail.rfind(b"\n") + 1]) + 1
    else:
        p.write_bytes(data)
        expected = _count_plain(data)
    recs = _records(p)
    assert len(recs) == expected
    res = Read(ReadConfig()).process_source(str(p))
    assert res.n_input == res.kept.num_rows + res.rejected.num_rows == expected


_ELEM = st.one_of(st.builds(lambda t, n: {"text": t, "n": n}, st.text(max_size=30), st.integers()),
                  st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3), st.none())


@_fuzz(60)
@given(elems=st.lists(_ELEM, max_size=20), indent=st.sampled_from([None, 1]), cut=st.floats(0, 1))
def test_fuzz_json_array(tmp_path, elems, indent, cut):
    """A whole array gives one record per element; a cut one its complete leading elements
    and then one error record, never an exception."""
    data = json.dumps(elems, indent=indent, ensure_ascii=False).encode()
    whole = cut > 0.95
    p = tmp_path / "a.json"
    p.write_bytes(data if whole else data[: int(len(data) * cut)])
    recs = _records(p)
    if not p.read_bytes().strip():
        assert recs == []
    elif whole:
        assert len(recs) == len(elems)
        assert [r.value for r in recs] == [e if isinstance(e, dict) else None for e in elems]
    else:
        assert len(recs) <= len(elems) + 1
        assert [r.value for r in recs[:-1]] == [e if isinstance(e, dict) else None for e in elems[: len(recs) - 1]]


@_fuzz(40)
@given(pos=st.floats(0, 1), width=st.integers(1, 64), byte=st.integers(0, 255))
def test_fuzz_parquet_damage(tmp_path, pos, width, byte):
    """Bytes overwritten anywhere: no exception; a readable footer means exactly the rows it
    counts, an unreadable one a single error record."""
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [f"row {i} " * 9 for i in range(90)], "i": list(range(90))}), p,
                   row_group_size=30, compression="zstd")
    b = bytearray(p.read_bytes())
    at = int((len(b) - width) * pos)
    b[at:at + width] = bytes([byte]) * width
    p.write_bytes(bytes(b))
    try:
        rows = pq.ParquetFile(p).metadata.num_rows
    except Exception:
        rows = None
    recs = _records(p)
    if rows is None:
        assert len(recs) == 1 and recs[0].error
    else:
        assert len(recs) == rows


@_fuzz(60)
@given(pos=st.floats(0, 1), width=st.integers(1, 8), byte=st.integers(0, 255))
def test_fuzz_arrow_stream_damage(tmp_path, pos, width, byte):
    """Overwritten bytes in an Arrow stream: an exception or a crash while converting damaged
    buffers must not happen (batches are fully validated first); whatever is not readable
    ends the file with one error record."""
    t = pa.table({"text": [f"row {i} " * 9 for i in range(90)], "i": list(range(90))})
    p = tmp_path / "s.arrow"
    _write_stream(p, t, 30)
    b = bytearray(p.read_bytes())
    at = int((len(b) - width) * pos)
    b[at:at + width] = bytes([byte]) * width
    p.write_bytes(bytes(b))
    recs = _records(p)
    assert len(recs) <= 91
    assert all(r.error is None for r in recs[:-1])
    assert all(isinstance(r.value, dict) for r in recs if r.error is None)
