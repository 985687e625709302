"""extract: WARC / WARC.gz files and folders of .html files -> documents with clean main text.

Keeps HTTP 200 HTML responses, decodes them with the declared or detected charset and
extracts the main text with trafilatura. Every response/resource record becomes a kept row
or a rejected row with a reason; a corrupt stretch of a WARC file becomes one rejected row
(``extract.corrupt_record``) and reading resumes after it. Records that are not documents
(warcinfo, request, metadata) are counted in the stats, not in the document counts.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa

from curate.config import StageConfig
from curate.schema import CORE_FIELDS, make_rejected
from curate.stage import ShardResult, SourceStage
from curate.warc import WarcItem, iter_warc

HTML_TYPES = ("text/html", "application/xhtml+xml")
DOC_RECORDS = ("response", "resource")
WARC_SUFFIXES = (".warc", ".warc.gz")
HTML_SUFFIXES = (".html", ".htm", ".html.gz")

SCHEMA = pa.schema(
    list(CORE_FIELDS)
    + [
        pa.field("title", pa.string()),
        pa.field("fetch_date", pa.string()),
        pa.field("html_lang", pa.string()),
        pa.field("charset", pa.string()),
        pa.field("content_bytes", pa.int64()),
        pa.field("input_file", pa.string()),
        pa.field("input_offset", pa.int64()),
    ]
)

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_HTTP_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)
_HTML_LANG = re.compile(rb"<html[^>]*\blang\s*=\s*[\"']?([A-Za-z-]{2,12})", re.I)
# Declared charsets whose pages are often written in a superset of them.
_SUPERSETS = {
    "ascii": ("utf-8",),
    "latin-1": ("cp1252",),
    "iso8859-1": ("cp1252",),
    "gb2312": ("gbk", "gb18030"),
    "gbk": ("gb18030",),
    "shift_jis": ("cp932",),
    "euc_kr": ("cp949",),
    "big5": ("big5hkscs", "cp950"),
}
# Declared charsets that pages with many invalid bytes were often really written in.
_CONFUSED = {"utf-8": ("cp1252",), "ascii": ("cp1252",)}
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


class ExtractConfig(StageConfig):
    """Config of the extract stage.

    Attributes:
        source_by_domain: domain suffix -> source category (longest suffix wins).
        default_source: category of documents whose domain matches no suffix.
        max_html_bytes: larger HTML bodies are rejected as ``extract.oversize``.
        max_text_chars: longer extractions are rejected as ``extract.oversize_text``.
        min_text_chars: shorter extractions are rejected as ``extract.empty``.
        favor_precision / favor_recall / include_tables / include_comments: trafilatura options.
        html_base_url: URL prefix given to files of an HTML folder.
    """

    source_by_domain: dict[str, str] = {}
    default_source: str = "web"
    max_html_bytes: int = 2_000_000
    max_text_chars: int = 1_000_000
    min_text_chars: int = 1
    favor_precision: bool = False
    favor_recall: bool = False
    include_tables: bool = True
    include_comments: bool = False
    html_base_url: str = "file:///"


def doc_id(input_name: str, position: int | str) -> str:
    """Stable id from the input's name and the record position (byte offset or file name)."""
    return hashlib.blake2b(f"{input_name}#{position}".encode(), digest_size=8).hexdigest()


def _norm_charset(name: str | None) -> str | None:
    if not name:
        return None
    import codecs

    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def decode_html(body: bytes, http_content_type: str | None) -> tuple[str | None, str | None, str | None]:
    """Decode HTML bytes: declared charset (HTTP header, then <meta>), else detection.

    Returns ``(text, charset, error)``; ``text`` is None when no charset decodes the bytes cleanly.
    """
    declared = None
    if http_content_type:
        m = _HTTP_CHARSET.search(http_content_type)
        if m:
            declared = m.group(1)
    if not declared:
        m = _META_CHARSET.search(body[:4096])
        if m:
            declared = m.group(1).decode("ascii", "ignore")
    cs = _norm_charset(declared) or "utf-8"
    for cand in (cs, *_SUPERSETS.get(cs, ())):
        try:
            return body.decode(cand), cand, None
        except UnicodeDecodeError:
            pass
    # A few corrupt bytes (<= 1%) in an otherwise valid page: keep it, U+FFFD in their place.
    text = body.decode(cs, errors="replace")
    bad = text.count("\ufffd") - body.decode(cs, errors="ignore").count("\ufffd")
    if bad <= max(1, len(body) // 100):
        return text, cs, None
    # Many bad bytes and few valid multi-byte characters: a mislabelled page (cp1252 served
    # as utf-8 ...). Try the usual supersets/confusions of the declared charset.
    valid_non_ascii = sum(1 for ch in text if ord(ch) > 127) - text.count("\ufffd")
    if valid_non_ascii < bad:
        for alt in _CONFUSED.get(cs, ()):
            try:
                return body.decode(alt), alt, None
            except UnicodeDecodeError:
                pass
    if declared is None:
        from charset_normalizer import from_bytes

        best = from_bytes(body[:200_000]).best()
        if best is not None and best.encoding != cs and best.chaos < 0.1:
            try:
                return body.decode(best.encoding), best.encoding, None
            except (UnicodeDecodeError, LookupError):
                pass
    return None, cs, f"{bad} bytes invalid as {declared or 'utf-8'} and no charset was detected"


def looks_binary(body: bytes) -> bool:
    head = body[:4096]
    if b"\x00" in head:
        return True
    return len(_CONTROL.findall(head)) > 0.01 * max(1, len(head))


def _domain(url: str | None) -> str:
    if not url:
        return ""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


class Extract(SourceStage):
    name = "extract"
    version = "1"
    Config = ExtractConfig

    def setup(self) -> None:
        import trafilatura

        self._traf = trafilatura
        self._suffixes = sorted(self.config.source_by_domain.items(), key=lambda kv: -len(kv[0]))

    # -- inputs ---------------------------------------------------------------
    def list_inputs(self, paths: list[str]) -> list[str]:
        out: list[str] = []
        for p in paths:
            path = Path(p)
            if path.is_file():
                out.append(str(path))
            elif path.is_dir():
                out.extend(str(f) for f in sorted(path.iterdir()) if f.is_file() and f.name.endswith(WARC_SUFFIXES))
                for d in sorted([path, *[x for x in path.rglob("*") if x.is_dir()]]):
                    if any(f.is_file() and f.name.endswith(HTML_SUFFIXES) for f in d.iterdir()):
                        out.append(str(d))
            else:
                from curate.errors import ConfigError

                raise ConfigError(f"extract input not found: {p}")
        return out

    def checksum(self, path: str) -> str:
        p = Path(path)
        if p.is_file():
            return super().checksum(path)
        h = hashlib.sha256()
        for f in self._html_files(p):
            h.update(f.name.encode() + b"\0" + super().checksum(str(f)).encode() + b"\n")
        return h.hexdigest()

    @staticmethod
    def _html_files(folder: Path) -> list[Path]:
        return sorted(f for f in folder.iterdir() if f.is_file() and f.name.endswith(HTML_SUFFIXES))

    # -- per shard ----------------------------------------------------------------
    def process_source(self, path: str) -> ShardResult:
        if not hasattr(self, "_traf"):
            self.setup()
        p = Path(path)
        rows: list[dict] = []
        reasons: list[str | None] = []
        details: list[str | None] = []
        stats: Counter = Counter()
        if p.is_dir():
            items = self._iter_html_folder(p)
        else:
            items = iter_warc(str(p), max_record_bytes=max(self.config.max_html_bytes * 4, 16 << 20))
        for item in items:
            if item.rec_type is not None and item.rec_type not in DOC_RECORDS:
                stats[f"records.{item.rec_type}"] += 1
                continue
            row, reason, detail = self._document(p.name, item)
            rows.append(row)
            reasons.append(reason)
            details.append(detail)
            stats["records.documents"] += 1
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        keep = [r is None for r in reasons]
        kept = table.filter(pa.array(keep, pa.bool_()))
        rej_idx = [i for i, r in enumerate(reasons) if r is not None]
        rejected = make_rejected(
            table.take(pa.array(rej_idx, pa.int64())),
            self.name,
            [reasons[i] for i in rej_idx],
            [details[i] for i in rej_idx],
        )
        stats["text_chars"] = sum(len(r["text"] or "") for r, k in zip(rows, keep) if k)
        return ShardResult(kept=kept, rejected=rejected, stats=dict(stats), n_input=len(rows))

    def _iter_html_folder(self, folder: Path):
        for f in self._html_files(folder):
            body = f.read_bytes()
            if f.name.endswith(".gz"):
                import gzip

                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError) as e:
                    yield WarcItem(offset=0, rec_type="resource", uri=self.config.html_base_url + f"{folder.name}/{f.name}",
                                   error=f"corrupt gzip file: {e}", warc_headers={"_file": f.name})
                    continue
            yield WarcItem(
                offset=0,
                rec_type="resource",
                uri=self.config.html_base_url + f"{folder.name}/{f.name}",
                status=200,
                http_headers={"content-type": "text/html"},
                body=body,
                warc_headers={"_file": f.name},
            )

    def _source(self, domain: str) -> str:
        for suffix, src in self._suffixes:
            if domain == suffix or domain.endswith("." + suffix):
                return src
        return self.config.default_source

    def _document(self, input_name: str, item: WarcItem) -> tuple[dict, str | None, str | None]:
        position = item.warc_headers.get("_file", item.offset)
        url = item.uri
        domain = _domain(url)
        row = {
            "id": doc_id(input_name, position),
            "text": None,
            "url": url,
            "domain": domain,
            "source": self._source(domain),
            "title": None,
            "fetch_date": item.date,
            "html_lang": None,
            "charset": None,
            "content_bytes": len(item.body) if item.body is not None else None,
            "input_file": input_name,
            "input_offset": item.offset,
        }
        if item.rec_type is None:
            return row, "extract.corrupt_record", item.error
        if item.oversize:
            return row, "extract.oversize", item.error
        if item.error:
            return row, "extract.corrupt_record", item.error
        if item.rec_type == "response" and item.status != 200:
            return row, "extract.http_status", f"HTTP {item.status}"
        ctype = (item.http_headers.get("content-type") or "").lower()
        body = item.body or b""
        if not body.strip():
            return row, "extract.empty", "empty body"
        mime = ctype.split(";")[0].strip()
        if mime and mime not in HTML_TYPES:
            return row, "extract.non_html", mime
        if not mime and not body.lstrip()[:1] == b"<":
            return row, "extract.non_html", "no content type and not markup"
        if len(body) > self.config.max_html_bytes:
            return row, "extract.oversize", f"{len(body)} bytes > {self.config.max_html_bytes}"
        if looks_binary(body):
            return row, "extract.binary", "control bytes in an HTML body"
        html, charset, err = decode_html(body, ctype)
        row["charset"] = charset
        if html is None:
            return row, "extract.decode_error", err
        m = _HTML_LANG.search(body[:4096])
        row["html_lang"] = m.group(1).decode("ascii").lower() if m else None
        try:
            tree = self._traf.utils.load_html(html)
            if tree is None:
                return row, "extract.parse_error", "HTML could not be parsed"
            title = tree.findtext(".//title")
            row["title"] = " ".join(title.split()) if title else None
            text = self._traf.extract(
                tree,
                url=url,
                favor_precision=self.config.favor_precision,
                favor_recall=self.config.favor_recall,
                include_tables=self.config.include_tables,
                include_comments=self.config.include_comments,
                deduplicate=False,
                with_metadata=False,
            )
        except Exception as e:  # a parser failure on one page must not lose the shard
            return row, "extract.extraction_error", f"{type(e).__name__}: {e}"
        if text is None or len(text.strip()) < self.config.min_text_chars:
            return row, "extract.empty", "no main text found"
        if len(text) > self.config.max_text_chars:
            return row, "extract.oversize_text", f"{len(text)} chars > {self.config.max_text_chars}"
        row["text"] = text
        return row, None, None


STAGE = Extract
