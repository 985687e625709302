"""extract: WARC / WARC.gz files and folders of .html files -> documents with clean main text.

Keeps HTTP 200 HTML responses, decodes them with the declared or detected charset and
extracts the main text with trafilatura. Every response/resource record becomes a kept row
or a rejected row with a reason; a corrupt stretch of a WARC file becomes one rejected row
(``extract.corrupt_record``) and reading resumes after it. Records that are not documents
(warcinfo, request, metadata) are counted in the stats, not in the document counts.

HTML folders are walked once per real directory (a directory symlink that loops back, or that
leads to a folder already walked, is not followed) and symlinked files are not read: every page
is read at its real location, once; what was skipped is counted in the stats (``skipped.*``).
An input file or folder that cannot be read becomes one rejected row
(``extract.unreadable_input``) and the other inputs are processed.

Inputs may be storage URIs (``s3://bucket/crawl``, :mod:`curate.storage`): WARC objects directly
under the prefix and every "folder" holding HTML objects are inputs, as for a local folder; each
task reads a local copy named as the object, so ids and URLs are those of a local run.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa

from curate import storage
from curate.config import StageConfig
from curate.errors import ConfigError
from curate.schema import CORE_FIELDS, domain_of, make_rejected
from curate.stage import ShardResult, SourceStage
from curate.warc import WarcItem, iter_warc
from curate.reasons import declare

REASONS = declare("extract", {
    "http_status": "the HTTP response status is not 200",
    "non_html": "the response is not HTML (content type, or no markup)",
    "empty": "the body is empty or no main text was found on the page",
    "oversize": "the HTML (or a WARC record) is larger than the configured limit",
    "binary": "control bytes in an HTML body: binary data served as HTML",
    "decode_error": "the bytes decode neither with the declared charset, a compatible one nor a detected one",
    "parse_error": "the HTML could not be parsed into a tree",
    "extraction_error": "the text extractor raised an error on the page",
    "oversize_text": "the extracted text is longer than max_text_chars",
    "corrupt_record": "a WARC record or gzip member is truncated or corrupt",
    "unreadable_input": "an input file (or folder) could not be read: permissions or an I/O error",
})

HTML_TYPES = ("text/html", "application/xhtml+xml")
DOC_RECORDS = ("response", "resource")
WARC_SUFFIXES = (".warc", ".warc.gz")
# Inputs that are text already (the read stage takes them), refused with a pointer there.
TEXT_CORPUS_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".arrow", ".ndjson")
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
# Declared charsets that pages invalid in them were often really written in cp1252.
_CONFUSED = ("utf-8", "ascii")
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
# Non-ASCII characters of cp1252 text that stand outside words: typographic marks, and the
# one-letter words of Western languages (French/Italian/Portuguese "à", "è", "é", ...).
_MARKS = set("\u00a0\u2019\u2018\u201c\u201d\u201e\u2013\u2014\u2026\u00ab\u00bb\u00b0\u20ac\u00a3\u00a5"
             "\u00a7\u00a9\u00ae\u00b7\u2022\u00d7\u00f7\u00b1\u00bf\u00a1\u00ba\u00aa\u00b2\u00b3\u00b9"
             "\u00bc\u00bd\u00be\u00b5\u00b6\u2020\u2021\u2030\u2039\u203a\u00a2")
_ONE_LETTER_WORDS = set("àáâèéêìíòóôùú")
# The accented letters of Western European words (not the rare ÿ, þ, ð, ƒ that stray bytes
# such as \xff, \xfe read as).
_LETTERS = set("àáâãäåæçèéêëìíîïñòóôõöøùúûüýœšžßÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŒŠŽ")


class ExtractConfig(StageConfig):
    """Config of the extract stage.

    Attributes:
        source_by_domain: domain suffix -> source category (longest suffix wins).
        default_source: category of documents whose domain matches no suffix.
        max_html_bytes: larger HTML bodies are rejected as ``extract.oversize``.
        max_text_chars: longer extractions are rejected as ``extract.oversize_text``.
        min_text_chars: shorter extractions are rejected as ``extract.empty``.
        favor_precision / favor_recall / include_tables / include_comments: trafilatura options.
        fast: trafilatura's ``fast`` mode: no fallback extractors (readability, jusText) when
            its own extraction looks poor; see docs/BENCHMARKS.md for its F1 and speed.
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
    fast: bool = False
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


def reads_as_cp1252(body: bytes) -> bool:
    """Whether bytes that are invalid as UTF-8 read as Western single-byte text (cp1252).

    In a cp1252 or latin-1 page the non-ASCII bytes are letters inside words (``caf\\xe9``,
    ``cr\\xe8me``), one-letter words or typographic marks. In a damaged UTF-8 page they are
    stray bytes between words (``\\xff\\xfe``), and its valid UTF-8 characters read as
    two-character mojibake (``\\xc3\\xa9`` -> ``Ã©``), so neither passes.
    """
    try:
        text = body.decode("cp1252")
    except UnicodeDecodeError:
        return False
    runs = ok = 0
    for m in _NON_ASCII.finditer(text):
        runs += 1
        run = m.group()
        if all(ch in _MARKS for ch in run):
            ok += 1
        elif len(run) <= 3 and all(ch in _LETTERS for ch in run):
            before, after = text[m.start() - 1: m.start()], text[m.end(): m.end() + 1]
            in_word = (before.isascii() and before.isalpha()) or (after.isascii() and after.isalpha())
            ok += in_word or run in _ONE_LETTER_WORDS
    return runs > 0 and ok >= 0.95 * runs


def decode_html(body: bytes, http_content_type: str | None) -> tuple[str | None, str | None, str | None]:
    """Decode HTML bytes: declared charset (HTTP header, then <meta>), else detection.

    Returns ``(text, charset, error)``; ``text`` is None when no charset decodes the bytes cleanly.
    """
    text, charset, error, _ = _decode(body, http_content_type)
    return text, charset, error


def _decode(body: bytes, http_content_type: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    """:func:`decode_html` plus a note saying when the text is not a clean decode with the
    declared charset (bytes replaced, a mislabelled or detected charset), or None."""
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
            return body.decode(cand), cand, None, None
        except UnicodeDecodeError:
            pass
    text = body.decode(cs, errors="replace")
    bad = text.count("\ufffd") - body.decode(cs, errors="ignore").count("\ufffd")
    # A mislabelled page (cp1252 served as utf-8, or an undeclared latin-1 page): fewer valid
    # multi-byte characters than invalid bytes, and its non-ASCII bytes read as cp1252 words.
    # Checked before the tolerance below: a page with two accents has few bad bytes too.
    valid_non_ascii = sum(1 for ch in text if ord(ch) > 127) - text.count("\ufffd")
    if cs in _CONFUSED and valid_non_ascii < bad and reads_as_cp1252(body):
        return body.decode("cp1252"), "cp1252", None, f"{bad} bytes invalid as {declared or 'utf-8'}: read as cp1252"
    # A few corrupt bytes (<= 1%) in an otherwise valid page: keep it, U+FFFD in their place.
    if bad <= max(1, len(body) // 100):
        return text, cs, None, f"{bad} bytes invalid as {cs} replaced by U+FFFD"
    if declared is None:
        from charset_normalizer import from_bytes

        best = from_bytes(body[:200_000]).best()
        if best is not None and best.encoding != cs and best.chaos < 0.1:
            try:
                return body.decode(best.encoding), best.encoding, None, f"invalid as utf-8: detected {best.encoding}"
            except (UnicodeDecodeError, LookupError):
                pass
    return None, cs, f"{bad} bytes invalid as {declared or 'utf-8'} and no charset was detected", None


def looks_binary(body: bytes) -> bool:
    head = body[:4096]
    if b"\x00" in head:
        return True
    return len(_CONTROL.findall(head)) > 0.01 * max(1, len(head))


def text_corpus_error(name: str) -> ConfigError:
    """The error for a text corpus (JSONL, Parquet, ...) given to extract, local or remote."""
    return ConfigError(f"extract reads WARC files and HTML folders, not {name}: "
                       f"corpora that are already text go through the `read` stage")


def no_inputs_error(where: str, files: list[str]) -> ConfigError:
    """The error for a folder or prefix with no WARC file or HTML folder; ``files`` are the
    names of what it does hold (the first three are named)."""
    other = files[:3]
    return ConfigError(f"extract: no WARC files or HTML folders under {where}"
                       + (f" (found {', '.join(other)}; text corpora go through the `read` stage)" if other else ""))


def use_c_element_lookup(parser) -> None:
    """Give ``parser``'s trees lxml.html's element classes through a lookup done in C.

    lxml.html's own parsers pick each element's class in a Python method
    (``HtmlElementClassLookup.lookup``), called every time trafilatura touches a node: about
    2,500 calls per page, 5-8 % of the extract stage's CPU on debian-docs. The default-class
    lookup gives every element ``HtmlElement`` (and comments, processing instructions and
    entities their ``Html*`` classes) without calling back into Python. Only form controls
    lose their special subclasses (``FormElement``, ``InputElement``: their ``.fields`` /
    ``.value`` helpers), which trafilatura does not use; the extracted text is the same
    (tests/test_extract.py compares it page by page with lxml.html's lookup).

    trafilatura parses with its module-level ``HTML_PARSER``, so this is set once per worker
    process, in :meth:`Extract.setup`."""
    from lxml import etree
    from lxml import html as lxml_html

    parser.set_element_class_lookup(etree.ElementDefaultClassLookup(
        element=lxml_html.HtmlElement, comment=lxml_html.HtmlComment,
        pi=lxml_html.HtmlProcessingInstruction, entity=lxml_html.HtmlEntity))


class Extract(SourceStage):
    name = "extract"
    version = "1"
    Config = ExtractConfig

    def setup(self) -> None:
        import trafilatura

        self._traf = trafilatura
        use_c_element_lookup(trafilatura.utils.HTML_PARSER)
        self._suffixes = sorted(self.config.source_by_domain.items(), key=lambda kv: -len(kv[0]))

    # -- inputs ---------------------------------------------------------------
    def list_inputs(self, paths: list[str]) -> list[str]:
        """WARC files (given, or directly in a given folder) and every folder holding HTML files,
        each real file or directory once (symlinks that lead to one already listed are dropped)."""
        out: list[str] = []
        seen: set[str] = set()

        def add(f: Path) -> None:
            real = os.path.realpath(f)
            if real not in seen:
                seen.add(real)
                out.append(str(f))

        for p in paths:
            if storage.is_uri(p):
                for f in remote_inputs(p):
                    if f not in seen:
                        seen.add(f)
                        out.append(f)
                continue
            path = Path(storage.local_path(p))
            if path.is_file():
                if path.name.lower().endswith(TEXT_CORPUS_SUFFIXES):
                    raise text_corpus_error(path.name)
                add(path)
            elif path.is_dir():
                try:
                    entries = sorted(path.iterdir())
                except OSError:
                    entries = []
                before = len(out)
                for f in sorted(entries, key=lambda f: f.is_symlink()):  # real files first
                    if f.name.endswith(WARC_SUFFIXES) and f.is_file():
                        add(f)
                for d in html_folders(path):
                    add(d)
                if len(out) == before:
                    raise no_inputs_error(p, [f.name for f in entries if f.is_file()])
            else:
                raise ConfigError(f"extract input not found: {p}")
        return out

    def checksum(self, path: str) -> str:
        """sha256 of a file, or of a folder's HTML files; an unreadable input gets a stable
        marker instead (it becomes one rejected row, and a rerun reads it again once readable)."""
        if storage.is_uri(path):
            return remote_checksum(path)
        p = Path(path)
        try:
            if p.is_file():
                return super().checksum(path)
            files, _ = html_files(p)
        except OSError as e:
            return f"unreadable: {e.strerror or e}"
        h = hashlib.sha256()
        for f in files:
            try:
                sha = super().checksum(str(f))
            except OSError as e:
                sha = f"unreadable: {e.strerror or e}"
            h.update(f.name.encode() + b"\0" + sha.encode() + b"\n")
        return h.hexdigest()

    # -- per shard ----------------------------------------------------------------
    def process_source(self, path: str) -> ShardResult:
        if not hasattr(self, "_traf"):
            self.setup()
        if storage.is_uri(path):
            with storage.local_copy(path) as local:
                return self.process_source(str(local))
        p = Path(path)
        rows: list[dict] = []
        reasons: list[str | None] = []
        details: list[str | None] = []
        stats: Counter = Counter()
        if p.is_dir():
            items = self._iter_html_folder(p, stats)
        else:
            items = self._iter_warc_file(p)
        for item in items:
            if item.rec_type is not None and item.rec_type not in DOC_RECORDS:
                stats[f"records.{item.rec_type}"] += 1
                continue
            row, reason, detail = self._document(p.name, item, stats)
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

    def _iter_warc_file(self, path: Path):
        """The items of a WARC file; a read error becomes one last unreadable item."""
        try:
            yield from iter_warc(str(path), max_record_bytes=max(self.config.max_html_bytes * 4, 16 << 20))
        except OSError as e:
            yield WarcItem(offset=-1, error=f"cannot read {path}: {e.strerror or e}", unreadable=True)

    def _iter_html_folder(self, folder: Path, stats: Counter):
        try:
            files, skipped = html_files(folder)
        except OSError as e:
            yield WarcItem(offset=0, rec_type="resource", uri=self.config.html_base_url + f"{folder.name}/",
                           error=f"cannot list folder {folder}: {e.strerror or e}", unreadable=True,
                           warc_headers={"_file": ""})
            return
        stats.update(skipped)
        for f in files:
            try:
                body = f.read_bytes()
            except OSError as e:
                yield WarcItem(offset=0, rec_type="resource", uri=self.config.html_base_url + f"{folder.name}/{f.name}",
                               error=f"cannot read {f}: {e.strerror or e}", unreadable=True,
                               warc_headers={"_file": f.name})
                continue
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

    def _document(self, input_name: str, item: WarcItem, stats: Counter) -> tuple[dict, str | None, str | None]:
        position = item.warc_headers.get("_file", item.offset)
        url = item.uri
        domain = domain_of(url)
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
        if item.unreadable:
            return row, "extract.unreadable_input", item.error
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
        html, charset, err, note = _decode(body, ctype)
        row["charset"] = charset
        if html is None:
            return row, "extract.decode_error", err
        if note is not None:
            stats["decode.pages_with_replaced_bytes" if "U+FFFD" in note else "decode.pages_in_another_charset"] += 1
        m = _HTML_LANG.search(body[:4096])
        row["html_lang"] = m.group(1).decode("ascii").lower() if m else None
        try:
            tree = self._traf.utils.load_html(html)
            if tree is None:
                if note is not None:  # the bytes, not the markup, are what is wrong
                    return row, "extract.decode_error", f"{note}; the result is not parseable HTML"
                return row, "extract.parse_error", "HTML could not be parsed"
            title = tree.findtext(".//title")
            row["title"] = " ".join(title.split()) if title else None
            text = self._traf.extract(
                tree,
                url=url,
                fast=self.config.fast,
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


def html_files(folder: Path) -> tuple[list[Path], Counter]:
    """The HTML files of ``folder`` that are read (sorted), and counts of what is skipped:
    symlinked files (every page is read at its real location) and directory links that loop
    back to the folder or one of its parents. Listing errors propagate (OSError)."""
    files, skipped = [], Counter()
    real = Path(os.path.realpath(folder))
    for f in sorted(folder.iterdir()):
        if f.is_symlink():
            if f.name.endswith(HTML_SUFFIXES) and f.is_file():
                skipped["skipped.symlinked_files"] += 1
            elif f.is_dir():
                target = Path(os.path.realpath(f))
                if target == real or target in real.parents:
                    skipped["skipped.looping_dir_links"] += 1
        elif f.name.endswith(HTML_SUFFIXES) and f.is_file():
            files.append(f)
    return files, skipped


def remote_inputs(uri: str) -> list[str]:
    """The inputs under a storage URI, as :meth:`Extract.list_inputs` finds them in a local folder:
    the object itself, or the WARC objects directly under the prefix, then every prefix that holds
    HTML objects (sorted as local folders are)."""
    from curate.errors import ConfigError

    what = storage.kind(uri)
    if what is None:
        raise ConfigError(f"extract input not found: {uri}")
    if what == "file":
        if uri.lower().endswith(TEXT_CORPUS_SUFFIXES):
            raise text_corpus_error(storage.name_of(uri))
        return [uri]
    base = uri.rstrip("/")
    files = storage.list_files(base)
    warcs = [f for f in files if storage.parent_of(f) == base and f.endswith(WARC_SUFFIXES)]
    folders = {storage.parent_of(f) for f in files if f.endswith(HTML_SUFFIXES)}
    if not warcs and not folders:
        raise no_inputs_error(uri, [storage.name_of(f) for f in files if storage.parent_of(f) == base])
    return warcs + sorted(folders, key=lambda u: u.split("/"))


def remote_checksum(uri: str) -> str:
    """:meth:`Extract.checksum` of a storage URI: the same value a local copy of it gets."""
    if storage.kind(uri) == "file":
        return storage.sha256(uri)
    h = hashlib.sha256()
    for f in storage.list_files(uri, recursive=False):
        if f.endswith(HTML_SUFFIXES):
            h.update(storage.name_of(f).encode() + b"\0" + storage.sha256(f).encode() + b"\n")
    return h.hexdigest()


def html_folders(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) that hold HTML files, one per real directory,
    sorted. Real subdirectories are walked first; a directory symlink is followed only to a
    directory not walked yet, so links that loop (``loop -> .``, ``up -> ..``) are not.
    A folder that cannot be listed is returned too (it becomes one unreadable row)."""
    seen: set[str] = set()
    found: list[Path] = []
    links: list[Path] = []

    def visit(d: Path) -> None:
        real = os.path.realpath(d)
        if real in seen:
            return
        seen.add(real)
        try:
            entries = sorted(d.iterdir())
        except OSError:
            found.append(d)
            return
        if any(f.name.endswith(HTML_SUFFIXES) and f.is_file() for f in entries):
            found.append(d)
        for e in entries:
            if e.is_symlink():
                if e.is_dir():
                    links.append(e)
            elif e.is_dir():
                visit(e)

    visit(root)
    while links:
        visit(links.pop(0))
    return sorted(found)


STAGE = Extract
