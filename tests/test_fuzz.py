"""Fuzz the input readers (issue 15): for every generated input, no traceback, and the records
the file holds == kept + rejected, counted by the generator (it knows what it wrote), never by
the reader under test.

WARC (plain and gzip) files are written by hand, record by record, with planted damage: a
``Content-Length`` that lies, garbage after a record, a damaged gzip member, a cut file. HTML
folders get nested folders, symlinked files and directory links that loop. JSONL and Parquet
go through the read stage. ``CURATE_FUZZ_EXAMPLES`` scales the examples per test (``make
fuzz``); the default keeps each test to a few seconds in ``make test``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from curate.config import build_config
from curate.errors import CurateError
from stages.extract import Extract, ExtractConfig

EXAMPLES = int(os.environ.get("CURATE_FUZZ_EXAMPLES", "0") or 0)
FUZZ = settings(max_examples=EXAMPLES or 20, deadline=None, derandomize=not EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])

# Body text never holds "W" or CR (so it cannot fake a WARC header line or a record trailer)
# and never the gzip magic; it does hold non-ASCII, markup and odd bytes once encoded.
WORDS = ["river", "valley", "café", "crème", "城市", "地铁", "straße", "<b>", "</p>", "&amp;", "données",
         "\u00a0", "—", "ünïcode", "<script>x=1</script>", "\t", "\n"]
_EXTRACT: Extract | None = None


def extract_stage() -> Extract:
    global _EXTRACT
    if _EXTRACT is None:
        _EXTRACT = Extract(build_config(ExtractConfig, {}, "fuzz"))
        _EXTRACT.setup()
    return _EXTRACT


@st.composite
def html_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["page", "page", "fragment", "bytes", "empty"]))
    if kind == "bytes":
        raw = draw(st.binary(max_size=300))
        return raw.replace(b"W", b"w").replace(b"\r", b" ").replace(b"\x1f", b" ")
    if kind == "empty":
        return b""
    words = draw(st.lists(st.sampled_from(WORDS), min_size=0, max_size=60))
    paras = "".join(f"<p>{' '.join(words[i:i + 12])}</p>" for i in range(0, len(words), 12))
    html = paras if kind == "fragment" else f"<html><head><title>t</title></head><body><article>{paras}</article></body></html>"
    enc = draw(st.sampled_from(["utf-8", "utf-8", "cp1252", "gbk", "latin-1"]))
    return html.encode(enc, errors="replace").replace(b"W", b"w").replace(b"\r", b" ")


@dataclass
class Rec:
    wtype: str
    uri: str
    block: bytes
    ctype: str


@st.composite
def records(draw, n: int) -> Rec:
    wtype = draw(st.sampled_from(["response", "response", "response", "resource", "request", "warcinfo", "metadata"]))
    uri = f"https://fuzz.example.org/{n}"
    body = draw(html_bodies())
    ctype = draw(st.sampled_from(["text/html; charset=utf-8", "text/html", "text/plain", "image/png", "",
                                  "text/html; charset=bogus", "text/html; charset=windows-1252"]))
    if wtype == "response":
        status = draw(st.sampled_from(["200 OK", "200 OK", "404 Not Found", "301 Moved"]))
        head = f"HTTP/1.1 {status}\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "") + "\r\n"
        return Rec(wtype, uri, head.encode() + body, "application/http; msgtype=response")
    if wtype == "resource":
        return Rec(wtype, uri, body, ctype or "text/html")
    if wtype == "request":
        return Rec(wtype, uri, b"GET /x HTTP/1.1\r\nHost: fuzz.example.org\r\n\r\n", "application/http; msgtype=request")
    return Rec(wtype, uri, b"software: fuzz\r\nformat: WARC File Format 1.0\r\n", "application/warc-fields")


def _header(rec: Rec, n: int, length: int) -> bytes:
    return (f"WARC/1.0\r\nWARC-Type: {rec.wtype}\r\nWARC-Target-URI: {rec.uri}\r\nWARC-Date: 2026-01-01T00:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{n:012d}>\r\nContent-Type: {rec.ctype}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


@st.composite
def warc_files(draw):
    """(file bytes, gz, rows expected, URIs that must not be kept, damage counts)."""
    gz = draw(st.booleans())
    recs = [draw(records(n)) for n in range(draw(st.integers(1, 7)))]
    damage = [draw(st.sampled_from(["none"] * 5 + ["cl_plus", "cl_minus", "garbage"] + (["member"] if gz else [])))
              for _ in recs]
    chunks: list[bytes] = []
    expected = 0
    spoiled: set[str] = set()
    pos = 0
    lies: list[tuple[int, int]] = []  # plain: (record index, the lying block end)
    for n, (rec, dmg) in enumerate(zip(recs, damage)):
        length = len(rec.block)
        broken = dmg in ("member", "garbage") or (dmg == "cl_plus")
        if dmg == "cl_plus":
            length += draw(st.integers(1, 4000))
        elif dmg == "cl_minus" and rec.block:
            length -= draw(st.integers(1, len(rec.block)))
            # A block that loses only whole CRLF pairs still ends in a trailer followed by blank
            # lines, which the reader allows between records: not detectable (nor harmful).
            tail = rec.block[length:] + b"\r\n\r\n"
            broken = not (tail.startswith(b"\r\n\r\n") and not tail.strip(b"\r\n"))
        raw = _header(rec, n, length) + rec.block + b"\r\n\r\n"
        if dmg == "cl_plus" and not gz:
            lies.append((n, pos + len(raw) - len(rec.block) - 4 + length))
        if gz:
            raw = gzip.compress(raw, mtime=0)
            if dmg == "member":
                raw = bytearray(raw)
                for _ in range(draw(st.integers(1, 4))):
                    at = draw(st.integers(max(len(raw) // 2, len(raw) - 40), len(raw) - 1))
                    raw[at] ^= draw(st.integers(1, 255))
                raw = bytes(raw)
        chunks.append(raw)
        pos += len(raw)
        if dmg == "garbage":
            junk = draw(st.binary(min_size=1, max_size=200)).translate(bytes.maketrans(b"W\r\n\x1f", b"w   "))
            chunks.append(junk)
            pos += len(junk)
            if gz:  # a stretch between members: its own corrupt row; the record before it is intact
                expected += 1
                broken = False
            elif not junk.strip(b"\x00"):  # NUL padding between records is skipped
                broken = False
        if broken:
            spoiled.add(rec.uri)
            expected += 1
        elif rec.wtype in ("response", "resource"):
            expected += 1
    data = b"".join(chunks)
    # A too-large length that happens to end on a CRLF CRLF (a later record's trailer) can
    # frame a longer well-formed record: not a lie the file can show. Keep such draws out.
    for _, stop in lies:
        assume(data[stop:stop + 4] != b"\r\n\r\n")
    if draw(st.booleans()) and damage[-1] == "none":
        # A gzip member cut inside its Huffman tables decodes to nothing, and a record cut
        # before "WARC/1" is not told from a header field: neither can be told from garbage,
        # so a cut leaves the first 100 bytes of a member, or 6 of a record.
        keep = min(100, len(chunks[-1])) if gz else 6
        cut = draw(st.integers(1, len(chunks[-1]) - keep)) if len(chunks[-1]) > keep else 0
        if cut:
            data = data[:-cut]
            last = recs[-1]
            if last.uri not in spoiled:
                spoiled.add(last.uri)
                if last.wtype not in ("response", "resource"):
                    expected += 1
    return data, gz, expected, spoiled


def _check_shard(res, expected: int, spoiled: set[str] = frozenset()) -> None:
    assert res.n_input == res.kept.num_rows + res.rejected.num_rows
    assert res.n_input == expected
    kept_urls = set(res.kept.column("url").to_pylist())
    assert not kept_urls & spoiled, f"a damaged record was kept: {kept_urls & spoiled}"
    ids = res.kept.column("id").to_pylist() + res.rejected.column("id").to_pylist()
    assert len(ids) == len(set(ids))


@FUZZ
@given(warc_files())
def test_fuzz_warc(tmp_path_factory, case):
    data, gz, expected, spoiled = case
    path = tmp_path_factory.mktemp("w") / ("f.warc.gz" if gz else "f.warc")
    path.write_bytes(data)
    try:
        res = extract_stage().process_source(str(path))
    except CurateError:
        return  # a named error is an acceptable outcome; a traceback is not
    _check_shard(res, expected, spoiled)


@st.composite
def html_trees(draw):
    """(files to write {relative path: bytes}, symlinks [(relative path, target)], rows expected)."""
    dirs = [""] + [d for d in draw(st.lists(st.sampled_from(["a", "b", "a/c", "b/d", "e"]), max_size=4, unique=True))]
    dirs = sorted({d for x in dirs for d in ([x.split("/")[0], x] if x else [x])})
    files: dict[str, bytes] = {}
    for i in range(draw(st.integers(0, 8))):
        d = draw(st.sampled_from(dirs))
        name = f"p{i}" + draw(st.sampled_from([".html", ".htm", ".html.gz", ".html.gz", ".txt"]))
        body = draw(html_bodies())
        if name.endswith(".gz"):
            body = gzip.compress(body, mtime=0) if draw(st.booleans()) else body + b"not gzip"
        files[f"{d}/{name}".lstrip("/")] = body
    links: list[tuple[str, str]] = []
    for j in range(draw(st.integers(0, 4))):
        d = draw(st.sampled_from(dirs))
        depth = d.count("/") + 1 if d else 0
        kind = draw(st.sampled_from(["file", "loop", "up", "sibling", "dangling"]))
        html = [f for f in files if f.endswith((".html", ".htm", ".html.gz"))]
        if kind == "file" and html:
            target = "../" * depth + draw(st.sampled_from(html))
            links.append((f"{d}/l{j}.html".lstrip("/"), target))
        elif kind == "loop":
            links.append((f"{d}/loop{j}".lstrip("/"), "."))
        elif kind == "up" and depth:
            links.append((f"{d}/up{j}", ".."))
        elif kind == "sibling":
            links.append((f"{d}/sib{j}".lstrip("/"), "../" * depth + draw(st.sampled_from(dirs)) or "."))
        elif kind == "dangling":
            links.append((f"{d}/gone{j}.html".lstrip("/"), "nothing-here.html"))
    expected = sum(1 for f in files if f.endswith((".html", ".htm", ".html.gz")))
    return files, links, expected


@FUZZ
@given(html_trees())
def test_fuzz_html_folders(tmp_path_factory, case):
    files, links, expected = case
    root = tmp_path_factory.mktemp("h") / "site"
    root.mkdir()
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    for rel, target in links:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(root / rel):
            (root / rel).symlink_to(target)
    st_ = extract_stage()
    try:
        inputs = st_.list_inputs([str(root)])
        results = [st_.process_source(i) for i in inputs]
    except CurateError:
        return
    assert sum(r.n_input for r in results) == expected
    for r in results:
        _check_shard(r, r.n_input)
    read = Counter((r["input_file"], r["id"]) for res in results for t in (res.kept, res.rejected) for r in t.to_pylist())
    assert all(v == 1 for v in read.values())


# -- JSONL / Parquet through the read stage ------------------------------------------------------

_READ = None


def read_stage():
    global _READ
    if _READ is None:
        from curate.stage import load_stage_class

        cls = load_stage_class("read")
        _READ = cls(build_config(cls.Config, {}, "fuzz"))
        _READ.setup()
    return _READ


@st.composite
def jsonl_lines(draw) -> tuple[bytes, int]:
    """(JSONL bytes, records): every non-blank line is a record."""
    out, n = [], 0
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["doc", "doc", "doc", "no_text", "not_object", "bad_json", "bad_utf8", "blank",
                                     "text_not_string"]))
        text = " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=20)))
        line = {
            "doc": lambda: json.dumps({"text": text, "url": "https://x.example.org/"}).encode(),
            "no_text": lambda: json.dumps({"body": text}).encode(),
            "not_object": lambda: json.dumps([text]).encode(),
            "bad_json": lambda: b'{"text": "unclosed',
            "bad_utf8": lambda: b'{"text": "caf\xe9"}',
            "blank": lambda: b"   ",
            "text_not_string": lambda: json.dumps({"text": draw(st.sampled_from([1, None, True, {"a": 1}]))}).encode(),
        }[kind]()
        n += kind != "blank"
        out.append(line + draw(st.sampled_from([b"\n", b"\r\n"])))
    return b"".join(out), n


@FUZZ
@given(jsonl_lines(), st.booleans())
def test_fuzz_jsonl(tmp_path_factory, case, gz):
    data, n = case
    path = tmp_path_factory.mktemp("j") / ("f.jsonl.gz" if gz else "f.jsonl")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    try:
        res = read_stage().process_source(str(path))
    except CurateError:
        return
    assert res.n_input == res.kept.num_rows + res.rejected.num_rows == n


@FUZZ
@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=60), st.integers(1, 20), st.booleans())
def test_fuzz_parquet(tmp_path_factory, texts, row_group, with_ids):
    cols = {"text": pa.array(texts, pa.string())}
    if with_ids:
        rng = random.Random(len(texts))
        cols["id"] = pa.array([None if rng.random() < 0.2 else f"d{i % 7}" for i in range(len(texts))], pa.string())
    path = tmp_path_factory.mktemp("p") / "f.parquet"
    pq.write_table(pa.table(cols), path, row_group_size=row_group)
    try:
        res = read_stage().process_source(str(path))
    except CurateError:
        return
    assert res.n_input == res.kept.num_rows + res.rejected.num_rows == len(texts)

