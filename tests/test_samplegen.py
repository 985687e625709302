"""The sample crawl: determinism, planted kinds, labels that match the WARC records."""

from __future__ import annotations

import hashlib
import html
import io
import ipaddress
import json
import os
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("mimesis")
pytest.importorskip("snownlp")

from stdnum import iban as stdnum_iban  # noqa: E402
from stdnum import luhn  # noqa: E402
from stdnum.cn import ric  # noqa: E402
from warcio.archiveiterator import ArchiveIterator  # noqa: E402

from samples import samplegen  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC_KINDS = {"prose", "spam", "boilerplate", "exact_dup", "near_dup", "pii", "code", "non_html",
             "http_error", "redirect", "invalid_utf8", "binary_junk", "empty", "oversize", "truncated"}


def _labels(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "labels.jsonl").read_text("utf-8").splitlines()]


def _digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _member(data: bytes, lab: dict) -> tuple[bytes, bool]:
    """Decompress one gzip member; return (bytes, whether the member ended cleanly)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data[lab["offset"]:lab["offset"] + lab["length"]])
    except zlib.error:
        return b"", False
    return out, d.eof and not d.unused_data


def _record(data: bytes, lab: dict):
    raw, ok = _member(data, lab)
    assert ok, lab
    got = [(rec, rec.content_stream().read()) for rec in ArchiveIterator(io.BytesIO(raw))]
    assert len(got) == 1, lab
    return got[0]


def _page_text(body: bytes, encoding: str) -> str:
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    return html.unescape(body.decode(encoding))


@pytest.fixture(scope="module")
def corpus(sample_corpus: Path) -> tuple[Path, list[dict]]:
    return sample_corpus, _labels(sample_corpus)


@pytest.fixture(scope="module")
def records(corpus) -> dict[tuple[str, int], tuple[object, bytes]]:
    """Every readable record by (file, offset)."""
    out, labels = corpus
    got = {}
    for f in sorted(out.glob("part-*.warc.gz")):
        data = f.read_bytes()
        for lab in labels:
            if lab["file"] == f.name and lab["kind"] != "truncated":
                got[(f.name, lab["offset"])] = _record(data, lab)
    return got


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c, d = (tmp_path / x for x in "abcd")
    samplegen.generate(a, seed=3, shards=3, scale=0.1)
    samplegen.generate(b, seed=3, shards=3, scale=0.1)
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-m", "samples.samplegen", str(c), "--seed", "3", "--shards", "3",
                    "--scale", "0.1"], check=True, cwd=ROOT, env=env, capture_output=True)
    samplegen.generate(d, seed=4, shards=3, scale=0.1)
    da = _digests(a)
    assert len(da) > 20 and any(k.startswith("html/") for k in da)
    assert da == _digests(b) == _digests(c)
    assert _digests(d)["labels.jsonl"] != da["labels.jsonl"]


def test_small_scale_keeps_every_planted_kind(tmp_path):
    summary = samplegen.generate(tmp_path, seed=1, shards=2, scale=0.05)
    assert DOC_KINDS <= set(summary["kinds"])
    assert summary["documents"] < 150


def test_every_kind_present_and_sizes(corpus):
    out, labels = corpus
    warc = [x for x in labels if x["warc_type"]]
    kinds = Counter(x["kind"] for x in warc)
    assert DOC_KINDS | {"warcinfo", "request"} <= set(kinds)
    assert kinds["warcinfo"] == len(list(out.glob("part-*.warc.gz"))) == 6
    docs = [x for x in warc if x["is_document"]]
    assert 500 <= len(docs) <= 800
    for kind in ("spam", "boilerplate", "exact_dup", "near_dup", "pii", "code"):
        assert kinds[kind] >= 10, kind
    prose = [x for x in docs if x["kind"] == "prose"]
    assert all(300 <= x["chars"] <= 3300 for x in prose), sorted(x["chars"] for x in prose)[:5]
    html_files = [x for x in labels if x["file"].startswith("html/")]
    assert 15 <= len(html_files) <= 30
    assert {p.name for p in (out / "html").iterdir()} == {x["file"][5:] for x in html_files}


def test_languages_sources_and_reference_corpus(corpus):
    _, labels = corpus
    docs = [x for x in labels if x["warc_type"] == "response"]
    langs = Counter(x["lang"] for x in docs if x["kind"] == "prose")
    assert {"en", "zh", "de", "fr", "es", "ru", "ja", "pt"} <= set(langs)
    assert {"wiki", "news", "forum", "web", "books", "code"} <= {x["source"] for x in docs}
    assert any(x["domain"].endswith(".gov.cn") and x["lang"] == "zh" for x in docs)
    for lang, floor in (("en", 100_000), ("zh", 40_000)):
        wiki = sum(x["chars"] for x in docs if x["kind"] == "prose" and x["source"] == "wiki" and x["lang"] == lang)
        assert wiki >= floor, (lang, wiki)


def test_labels_match_records(corpus, records):
    out, labels = corpus
    for lab in labels:
        if not lab["warc_type"] or lab["kind"] == "truncated":
            continue
        rec, body = records[(lab["file"], lab["offset"])]
        assert rec.rec_type == lab["warc_type"]
        assert rec.rec_headers.get_header("WARC-Record-ID") == lab["record_id"]
        assert rec.rec_headers.get_header("WARC-Target-URI") == lab["uri"]
        assert rec.rec_headers.get_header("WARC-Date").endswith("Z")
        if lab["warc_type"] != "response":
            continue
        assert int(rec.http_headers.get_statuscode()) == lab["status"]
        assert rec.http_headers.get_header("Content-Type") == lab["content_type"]
        assert int(rec.http_headers.get_header("Content-Length")) == len(body)
        if lab["main_text"] and lab["kind"] not in ("invalid_utf8",):
            page = _page_text(body, lab["encoding"])
            for para in lab["main_text"].split("\n\n"):
                assert para in page, (lab["uri"], para[:80])


def test_gzip_members_carry_no_mtime(corpus):
    out, labels = corpus
    for f in sorted(out.glob("part-*.warc.gz")):
        data = f.read_bytes()
        offsets = [x["offset"] for x in labels if x["file"] == f.name]
        assert offsets[0] == 0 and offsets == sorted(offsets)
        for off in offsets:
            assert data[off:off + 3] == b"\x1f\x8b\x08"
            assert data[off + 4:off + 8] == b"\x00\x00\x00\x00"


def test_truncated_member_in_one_shard_with_records_after_it(corpus):
    out, labels = corpus
    (trunc,) = [x for x in labels if x["kind"] == "truncated"]
    data = (out / trunc["file"]).read_bytes()
    _, ok = _member(data, trunc)
    assert not ok
    same = [x for x in labels if x["file"] == trunc["file"]]
    after = [x for x in same if x["offset"] > trunc["offset"]]
    assert len(after) >= 5 and all(x["after_corruption"] for x in after)
    assert not any(x["after_corruption"] for x in labels if x["file"] != trunc["file"])
    assert not any(x["after_corruption"] for x in same if x["offset"] <= trunc["offset"])
    # Reading the file straight through cannot get every record past the corrupt member.
    seen = []
    try:
        for rec in ArchiveIterator(io.BytesIO(data)):
            seen.append(rec.rec_headers.get_header("WARC-Record-ID"))
    except Exception:  # warcio raises on the corrupt member
        pass
    assert set(x["record_id"] for x in after) - set(seen)


def test_robust_reader_recovers_everything_after_the_corruption(corpus):
    warc = pytest.importorskip("curate.warc")
    out, labels = corpus
    (trunc,) = [x for x in labels if x["kind"] == "truncated"]
    items = list(warc.iter_warc(str(out / trunc["file"])))
    errors = [i for i in items if i.error]
    assert [e.offset for e in errors] == [trunc["offset"]]
    expect = {x["record_id"] for x in labels if x["file"] == trunc["file"] and x["kind"] != "truncated"}
    assert {i.record_id for i in items if not i.error} == expect


def test_urls_unique_and_exact_duplicates_share_bytes(corpus, records):
    _, labels = corpus
    resp = [x for x in labels if x["warc_type"] == "response"]
    uris = Counter(x["uri"] for x in resp)
    assert max(uris.values()) == 1
    by_uri = {x["uri"]: x for x in resp}
    dups = [x for x in resp if x["kind"] == "exact_dup"]
    cross = 0
    for dup in dups:
        orig = by_uri[dup["dup_of"]]
        assert orig["kind"] == "prose"
        _, a = records[(dup["file"], dup["offset"])]
        _, b = records[(orig["file"], orig["offset"])]
        assert a == b
        cross += dup["file"] != orig["file"]
    assert 0 < cross < len(dups)


def test_near_duplicates_jaccard(corpus):
    _, labels = corpus
    by_uri = {x["uri"]: x for x in labels if x["warc_type"] == "response"}
    near = [x for x in labels if x["kind"] == "near_dup"]
    assert {x["ngram"] for x in near} == {"word5", "char5"}
    for x in near:
        orig = by_uri[x["dup_of"]]
        unit = "char" if x["ngram"] == "char5" else "word"
        j = samplegen.jaccard(orig["main_text"], x["main_text"], unit=unit)
        assert 0.8 <= j <= 0.95 and abs(j - x["jaccard"]) < 1e-3
        assert x["uri"] != orig["uri"]


def _iban_ok(value: str) -> bool:
    return stdnum_iban.is_valid(value, check_country=False)


def _cn_id_ok(s: str) -> bool:
    return len(s) == 18 and s[:17].isdigit() and ric.calc_check_digit(s) == s[17]


def test_pii_values_are_valid_and_decoys_are_not(corpus):
    phonenumbers = pytest.importorskip("phonenumbers")
    _, labels = corpus
    pages = [x for x in labels if x["kind"] == "pii"]
    types = Counter(p["type"] for x in pages for p in x["pii"])
    assert {"email", "phone", "phone_cn", "ipv4", "ipv6", "card", "iban", "ssn", "cn_id",
            "aws_key", "aws_secret"} <= set(types)
    assert {"version", "isbn", "date", "order_id", "invalid_card", "invalid_iban", "invalid_cn_id"} <= {
        d["type"] for x in pages for d in x["decoys"]}
    assert {x["lang"] for x in pages} == {"en", "zh"}
    for x in pages:
        for item in x["pii"] + x["decoys"]:
            assert item["value"] in x["main_text"], item
        for item in x["pii"]:
            t, v = item["type"], item["value"]
            digits = "".join(ch for ch in v if ch.isdigit())
            if t == "card":
                assert luhn.is_valid(digits) and 13 <= len(digits) <= 19
            elif t == "iban":
                assert _iban_ok(v)
            elif t == "cn_id":
                assert _cn_id_ok(v)
            elif t == "ssn":
                area = int(v[:3])
                assert 0 < area < 900 and area != 666 and v[4:6] != "00" and v[7:] != "0000"
            elif t in ("phone", "phone_cn"):
                num = phonenumbers.parse(v, "US" if t == "phone" else "CN")
                assert phonenumbers.is_valid_number(num), v
            elif t in ("ipv4", "ipv6"):
                assert ipaddress.ip_address(v).is_global
            elif t == "aws_key":
                assert v.startswith("AKIA") and len(v) == 20
        for item in x["decoys"]:
            t, v = item["type"], item["value"]
            if t == "invalid_card":
                assert not luhn.is_valid(v.replace(" ", ""))
            elif t == "invalid_iban":
                assert not _iban_ok(v)
            elif t == "invalid_cn_id":
                assert not _cn_id_ok(v)
            elif t == "version":
                with pytest.raises(ValueError):
                    ipaddress.ip_address(v)


def test_broken_and_non_html_records(corpus, records):
    _, labels = corpus
    body = {}
    for x in labels:
        if x["warc_type"] == "response" and x["kind"] != "truncated":
            body.setdefault(x["kind"], []).append((x, records[(x["file"], x["offset"])][1]))
    (over,) = body["oversize"]
    assert len(over[1]) > 2_000_000
    for x, b in body["invalid_utf8"]:
        assert "utf-8" in x["content_type"].lower()
        with pytest.raises(UnicodeDecodeError):
            b.decode("utf-8")
    for _, b in body["binary_junk"]:
        with pytest.raises(UnicodeDecodeError):
            b.decode("utf-8")
    assert {len(b.strip()) for _, b in body["empty"]} == {0}
    ctypes = {x["content_type"].split(";")[0]: b for x, b in body["non_html"]}
    assert ctypes["image/png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert ctypes["application/pdf"].startswith(b"%PDF-") and b"%%EOF" in ctypes["application/pdf"]
    assert json.loads(ctypes["application/json"])["items"]
    assert {x["status"] for x, _ in body["http_error"]} >= {404}
    resp = {x["uri"] for x in labels if x["warc_type"] == "response"}
    for x, _ in body["redirect"]:
        assert x["status"] in (301, 302) and x["location"] in resp
    assert {x["status"] for x, _ in body["redirect"]} >= {301}
    code = [b for x, b in body["code"]]
    assert all(b"<pre><code" in b for b in code)


def test_legacy_encodings_in_crawl_and_html_folder(corpus, records):
    out, labels = corpus
    warc = [x for x in labels if x["warc_type"] == "response" and x["kind"] == "prose"]
    seen = {(x["encoding"], x["charset_declared"]) for x in warc}
    assert {("gbk", "http"), ("gbk", "meta"), ("shift_jis", "meta"), ("windows-1252", "http"),
            ("windows-1252", "meta"), ("utf-8", "none")} <= seen
    for x in warc:
        if x["encoding"] != "utf-8":
            _, b = records[(x["file"], x["offset"])]
            text = _page_text(b, x["encoding"])
            assert x["main_text"].split("\n\n")[0] in text
            declared_in_header = "charset=" in x["content_type"]
            assert declared_in_header == ("http" in x["charset_declared"])
    files = [x for x in labels if x["file"].startswith("html/")]
    assert {"gbk", "shift_jis", "euc_jp", "windows-1252", "windows-1251", "koi8_r"} <= {x["encoding"] for x in files}
    assert {"meta", "none", "bom"} <= {x["charset_declared"] for x in files}
    for x in files:
        raw = (out / x["file"]).read_bytes()
        if x["kind"] == "empty":
            assert raw == b""
            continue
        assert raw.startswith(b"\xef\xbb\xbf") == (x["charset_declared"] == "bom")
        if x["charset_declared"] == "meta":
            assert f"charset={x['declared_charset']}".encode() in raw.replace(b'"', b"")
        text = _page_text(raw, x["encoding"])
        if x["main_text"]:
            assert x["main_text"].split("\n\n")[-1] in text
