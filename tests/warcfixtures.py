"""Hand-built WARC files with known good and malformed records, for extract and IO tests."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

ARTICLE = (
    "<html lang='{lang}'><head><meta charset='{charset}'><title>{title}</title></head><body>"
    "<nav><a href='/'>Home</a> | <a href='/news'>News</a> | <a href='/about'>About</a></nav>"
    "<article><h1>{title}</h1>{paras}</article>"
    "<footer>Copyright 2026 Example Org. All rights reserved. <a href='/privacy'>Privacy</a></footer>"
    "</body></html>"
)

PARAS_EN = [
    "The river valley was settled by farmers who grew barley and wheat along the fertile banks.",
    "Over the centuries the villages grew into market towns, linked by roads that followed the water.",
    "Today the valley is known for its orchards, its stone bridges and a festival held every autumn.",
    "Visitors walk the old towpath, stopping at mills that once ground flour for the whole region.",
]
PARAS_ZH = [
    "这个城市位于河流的交汇处，自古以来就是重要的商业中心。",
    "近年来，政府加大了对公共交通的投资，修建了多条地铁线路。",
    "市民们可以方便地前往博物馆、公园和图书馆，享受丰富的文化生活。",
]


def article(title: str, paras: list[str], lang: str = "en", charset: str = "utf-8") -> str:
    return ARTICLE.format(lang=lang, charset=charset, title=title, paras="".join(f"<p>{p}</p>" for p in paras))


def _record(writer: WARCWriter, uri: str, body: bytes, status: str = "200 OK",
            ctype: str | None = "text/html; charset=utf-8", n: int = 0) -> None:
    headers = [("Content-Type", ctype)] if ctype else []
    http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    rec = writer.create_warc_record(
        uri, "response", payload=io.BytesIO(body), http_headers=http,
        warc_headers_dict={"WARC-Date": "2026-01-01T00:00:00Z", "WARC-Record-ID": f"<urn:uuid:00000000-0000-0000-0000-{n:012d}>"},
    )
    writer.write_record(rec)


def good_and_bad_records(gz: bool) -> list[tuple[str, bytes, str, str | None]]:
    """(uri, body, status, content-type) of each planted record, and the expected outcome in order."""
    en = article("River valley", PARAS_EN).encode("utf-8")
    zh_gbk = article("城市", PARAS_ZH, lang="zh", charset="gbk").encode("gbk")
    bad_utf8 = article("Broken", PARAS_EN).encode("utf-8").replace(b"farmers", b"farm\x81\x8d\x90\x9d\xff" * 20)
    return [
        ("https://a.example.org/en", en, "200 OK", "text/html; charset=utf-8"),
        ("https://a.example.org/missing", b"<html>not here</html>", "404 Not Found", "text/html"),
        ("https://a.example.org/logo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "200 OK", "image/png"),
        ("https://a.example.org/empty", b"", "200 OK", "text/html"),
        ("https://b.example.cn/zh", zh_gbk, "200 OK", "text/html"),
        ("https://a.example.org/bad-utf8", bad_utf8, "200 OK", "text/html; charset=utf-8"),
        ("https://a.example.org/junk", bytes(range(256)) * 8, "200 OK", "text/html"),
        ("https://a.example.org/no-text", b"<html><body><script>var x = 1;</script></body></html>", "200 OK", "text/html"),
    ]


EXPECTED = [None, "extract.http_status", "extract.non_html", "extract.empty", None,
            "extract.decode_error", "extract.binary", "extract.empty"]


def write_warc(path: Path, gz: bool = True, corrupt_after: int | None = None) -> None:
    """Write the planted records; with ``corrupt_after=k`` a damaged gzip member follows record k."""
    recs = good_and_bad_records(gz)
    buf = io.BytesIO()
    for n, (uri, body, status, ctype) in enumerate(recs):
        member = io.BytesIO()
        _record(WARCWriter(member, gzip=gz), uri, body, status, ctype, n)
        buf.write(member.getvalue())
        if corrupt_after is not None and n == corrupt_after:
            bad = io.BytesIO()
            _record(WARCWriter(bad, gzip=gz), "https://a.example.org/damaged", article("Damaged", PARAS_EN).encode(), n=99)
            raw = bytearray(bad.getvalue())
            mid = len(raw) // 2
            raw[mid:mid + 40] = b"\x00" * 40  # damage the deflate stream
            buf.write(bytes(raw[: len(raw) - 10]))
    path.write_bytes(buf.getvalue())


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
