"""Readers for existing corpora: JSONL (plain, gzip, zstd, bz2, xz), JSON arrays, Parquet,
Arrow IPC and Hugging Face ``datasets`` folders, record by record.

:func:`iter_records` yields one :class:`RawRecord` per record *as the file holds it*: a line
of a JSONL file, an element of a JSON array, a row of a Parquet or Arrow file. A record that
cannot be read comes back with ``value=None`` and ``error="<kind>: <one line>"`` (kinds in
:data:`ERROR_KINDS`) and reading goes on where it can:

* a JSONL line that is not UTF-8, not JSON, not an object or longer than the limit is one
  error record; the next line is read normally;
* a compressed stream that is cut short or damaged ends with ONE error record standing for
  the lost tail (every complete line before it was yielded);
* a Parquet row group that cannot be decoded gives one error record per row it holds (the
  footer says how many), and the next row group is read;
* a JSON array with a syntax error, or an Arrow stream with a damaged batch, ends with one
  error record (nothing after it can be delimited);
* a file that cannot be opened at all is one ``unreadable`` error record.

Blank (whitespace-only) lines of a JSONL file are not records. A UTF-8 byte order mark and
CRLF line ends are accepted. Nothing is read whole: JSONL and JSON arrays are streamed,
Parquet by row group and batch, Arrow files memory-mapped batch by batch.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CurateError

FORMATS = ("jsonl", "json", "parquet", "arrow", "hf")
DEFAULT_MAX_RECORD_BYTES = 64 << 20
DEFAULT_BATCH_ROWS = 8192

ERROR_KINDS = {
    "bad_json": "the line or array element is not valid JSON",
    "bad_encoding": "the line is not valid UTF-8, or a string holds an unpaired surrogate escape",
    "not_object": "the record is valid JSON but not an object",
    "too_long": "the line or element is longer than the reader's record limit",
    "truncated": "the (compressed) file ends early; this record stands for the lost tail",
    "corrupt": "the file's data is damaged from here on (compressed stream, row group or batch)",
    "unreadable": "the file or folder could not be opened or listed",
}

_COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd", ".bz2", ".xz")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
_BOM = b"\xef\xbb\xbf"


class ReaderError(CurateError):
    """A path that does not exist, or a format that cannot be read."""


class RawRecord(NamedTuple):
    """One record of an input file.

    Attributes:
        index: position of the record in the file (0-based, counting every record the file
            holds, unreadable ones included).
        value: the record as a dict, or None when it could not be read.
        error: ``"<kind>: <message>"`` when it could not be read, else None.
    """

    index: int
    value: dict | None
    error: str | None


def error_kind(error: str) -> str:
    """The kind token of a :attr:`RawRecord.error` (``"bad_json"``, ``"truncated"`` ...)."""
    kind = error.split(":", 1)[0]
    return kind if kind in ERROR_KINDS else "corrupt"


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- format detection ---------------------------------------------------------------------
def is_hf_dataset(folder: str | os.PathLike) -> bool:
    """True for a folder written by ``Dataset.save_to_disk`` (``state.json`` or
    ``dataset_info.json`` beside ``data-*.arrow`` files)."""
    p = Path(folder)
    try:
        if (p / "state.json").is_file():
            return True
        return (p / "dataset_info.json").is_file() and any(p.glob("data-*.arrow"))
    except OSError:
        return False


def hf_splits(folder: str | os.PathLike) -> list[Path] | None:
    """The split folders of a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json``),
    in the order it lists them; None for any other folder."""
    p = Path(folder)
    f = p / "dataset_dict.json"
    try:
        if not f.is_file():
            return None
        splits = json.loads(f.read_text(encoding="utf-8")).get("splits")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        return None
    return [p / s for s in splits]


def hf_data_files(folder: str | os.PathLike) -> list[Path]:
    """The Arrow files of a ``save_to_disk`` folder, in ``state.json`` order (else sorted).

    Raises:
        OSError / ValueError: when the folder or its ``state.json`` cannot be read.
    """
    p = Path(folder)
    state = p / "state.json"
    if state.is_file():
        files = json.loads(state.read_text(encoding="utf-8")).get("_data_files")
        if not isinstance(files, list) or not all(isinstance(f, dict) and "filename" in f for f in files):
            raise ValueError(f"{state}: no `_data_files` list of {{filename: ...}}")
        return [p / f["filename"] for f in files]
    files = sorted(p.glob("data-*.arrow"))
    if not files:
        raise ValueError(f"{p}: neither state.json nor data-*.arrow files")
    return files


def detect_format(path: str | os.PathLike) -> str | None:
    """``jsonl``, ``json``, ``parquet``, ``arrow`` or ``hf`` from the name (compression
    suffixes ignored for the JSON formats); None when the name says nothing known."""
    p = Path(path)
    if p.is_dir():
        return "hf"
    name = p.name.lower()
    compressed = name.endswith(_COMPRESSED_SUFFIXES)
    if compressed:
        name = name.rsplit(".", 1)[0]
    fmt = _EXTENSIONS.get(os.path.splitext(name)[1])
    if compressed and fmt not in ("jsonl", "json"):
        return None
    return fmt


# -- byte streams ---------------------------------------------------------------------------
class _ZstdRaw(io.RawIOBase):
    """A zstd stream (one or more frames) that raises EOFError when the last frame is cut."""

    def __init__(self, f):
        import zstandard

        self._f = f
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._d = self._new()
        self._in_frame = False
        self._pending = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._pending):
            chunk = self._f.read(1 << 16)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame")
                return 0
            out = []
            while chunk:
                self._in_frame = True
                out.append(self._d.decompress(chunk))
                if self._d.eof:
                    chunk = self._d.unused_data
                    self._d, self._in_frame = self._new(), False
                else:
                    chunk = b""
            self._pending, self._pos = b"".join(out), 0
        n = min(len(b), len(self._pending) - self._pos)
        b[:n] = self._pending[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _open_bytes(path: str | os.PathLike):
    """A buffered binary stream of the file's bytes, decompressed by its magic number.

    A file whose name has no compression suffix is read as plain bytes when its magic
    number is not followed by a valid header (text that happens to start that way)."""
    f = open(path, "rb")
    head = f.peek(6)[:6]
    if head[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=f, mode="rb")
    elif head[:4] == b"\x28\xb5\x2f\xfd":
        stream = io.BufferedReader(_ZstdRaw(f), buffer_size=1 << 16)
    elif head[:3] == b"BZh" and str(path).lower().endswith(".bz2"):  # "BZh" can start a text line
        stream = bz2.BZ2File(f)
    elif head[:6] == b"\xfd7zXZ\x00":
        stream = lzma.LZMAFile(f)
    else:
        return f
    if str(path).lower().endswith(_COMPRESSED_SUFFIXES):
        return stream
    try:
        stream.peek(1)
    except (EOFError, *_stream_errors()):
        f.seek(0)
        return f
    return stream


def _stream_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [OSError, zlib.error, lzma.LZMAError]
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def _lines(stream, limit: int) -> Iterator[tuple[int, bytes | int]]:
    """``(line number, bytes)`` per physical line; an over-long line gives its length (int)."""
    lineno = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        lineno += 1
        if len(line) > limit and not line.endswith(b"\n"):
            size = len(line)
            while True:
                more = stream.readline(1 << 20)
                size += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield lineno, size
        else:
            yield lineno, line


def _has_surrogate(value: Any) -> bool:
    """True when a string inside ``value`` holds an unpaired surrogate (not encodable)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _decode_line(index: int, lineno: int, line: bytes) -> RawRecord:
    line = line.rstrip(b"\r\n")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawRecord(index, None, f"bad_encoding: line {lineno}: invalid UTF-8 at byte {e.start}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        return RawRecord(index, None, _one_line(f"bad_json: line {lineno}: {e}: {text[:80]!r}"))
    return _check_value(index, f"line {lineno}", value)


def _check_value(index: int, where: str, value: Any) -> RawRecord:
    if not isinstance(value, dict):
        return RawRecord(index, None, f"not_object: {where}: a JSON {type(value).__name__}, not an object")
    if _has_surrogate(value):
        return RawRecord(index, None, f"bad_encoding: {where}: a string holds an unpaired surrogate escape")
    return RawRecord(index, value, None)


def _iter_jsonl(stream, limit: int) -> Iterator[RawRecord]:
    index = 0
    errors = _stream_errors()
    try:
        for lineno, line in _lines(stream, limit):
            if isinstance(line, int):
                yield RawRecord(index, None, f"too_long: line {lineno}: {line} bytes > limit {limit}")
                index += 1
                continue
            if lineno == 1 and line.startswith(_BOM):
                line = line[len(_BOM):]
            if not line.strip():
                continue
            yield _decode_line(index, lineno, line)
            index += 1
    except EOFError as e:
        yield RawRecord(index, None, _one_line(f"truncated: stream ends early after {index} records: {e}"))
    except errors as e:
        yield RawRecord(index, None, _one_line(f"corrupt: unreadable from record {index} on: {e}"))


class _Text:
    """A growing text window over a binary stream, for the JSON array parser."""

    def __init__(self, stream):
        self._stream = stream
        self._dec = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._first = True

    def more(self) -> bool:
        """Read more text (doubling the window); False at the end of the stream."""
        if self.eof:
            return False
        data = self._stream.read(max(1 << 20, len(self.buf) - self.pos))
        if self._first and data.startswith(_BOM):
            data = data[len(_BOM):]
        self._first = False
        self.buf = self.buf[self.pos:] + self._dec.decode(data, final=not data)
        self.pos = 0
        if not data:
            self.eof = True
        return True

    def skip_ws(self) -> str:
        """The next non-whitespace character ('' at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""


def _iter_json_array(stream, limit: int) -> Iterator[RawRecord]:
    decoder = json.JSONDecoder()
    t = _Text(stream)
    index = 0
    errors = _stream_errors()
    try:
        first = t.skip_ws()
        if first == "":
            return
        if first != "[":
            yield RawRecord(0, None, f"bad_json: expected a JSON array, found {first!r}")
            return
        t.pos += 1
        expect_value = True
        while True:
            c = t.skip_ws()
            if c == "]" and (expect_value is False or index == 0):
                t.pos += 1
                if t.skip_ws() != "":
                    yield RawRecord(index, None, "bad_json: data after the closing ']'")
                return
            if not expect_value:
                if c != ",":
                    yield RawRecord(index, None, _one_line(
                        f"bad_json: expected ',' or ']' after element {index - 1}, found {c or 'end of file'!r}"))
                    return
                t.pos += 1
                expect_value = True
                continue
            if c == "":
                yield RawRecord(index, None, "truncated: the array ends without ']'")
                return
            while True:
                try:
                    value, end = decoder.raw_decode(t.buf, t.pos)
                    if end < len(t.buf) or t.eof:
                        break
                except (ValueError, RecursionError) as e:
                    if t.eof:
                        yield RawRecord(index, None, _one_line(
                            f"bad_json: element {index}: {e}; the rest of the file cannot be delimited"))
                        return
                if len(t.buf) - t.pos > limit:
                    yield RawRecord(index, None, f"too_long: element {index} is longer than {limit} bytes; "
                                                 "the rest of the file is not read")
                    return
                t.more()
            t.pos = end
            yield _check_value(index, f"element {index}", value)
            index += 1
            expect_value = False
    except UnicodeDecodeError as e:
        yield RawRecord(index, None, _one_line(f"bad_encoding: invalid UTF-8 in element {index}: {e}"))
    except EOFError as e:
        yield RawRecord(index, None, _one_line(f"truncated: stream ends early after {index} elements: {e}"))
    except errors as e:
        yield RawRecord(index, None, _one_line(f"corrupt: unreadable from element {index} on: {e}"))


def _json_kind(stream) -> str:
    """``json`` (an array) when the first non-blank character is '[', else ``jsonl``."""
    head = stream.peek(4096)[:4096] if hasattr(stream, "peek") else b""
    head = head.removeprefix(_BOM).lstrip()
    return "json" if head[:1] == b"[" else "jsonl"


# -- columnar formats ----------------------------------------------------------------------
def _project(schema: pa.Schema, columns: list[str] | None) -> list[str] | None:
    """Top-level columns to read for ``columns`` (dotted names read their first part)."""
    if columns is None:
        return None
    names = set(schema.names)
    out: list[str] = []
    for c in columns:
        top = c if c in names else c.split(".", 1)[0]
        if top in names and top not in out:
            out.append(top)
    return out


def _iter_parquet(path, columns, batch_rows) -> Iterator[RawRecord]:
    try:
        pf = pq.ParquetFile(path)
        cols = _project(pf.schema_arrow, columns)
        sizes = [pf.metadata.row_group(rg).num_rows for rg in range(pf.num_row_groups)]
    except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: undecodable names in the footer
        yield RawRecord(0, None, _one_line(f"corrupt: not a readable Parquet file: {e}"))
        return
    index = 0
    for rg, n in enumerate(sizes):
        # A row group is decoded whole before any of its rows is handed out: one
        # that fails, or decodes to another row count than the footer's, is not trusted at all.
        try:
            rows = [r for b in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=cols)
                    for r in _checked(b).to_pylist()]
            msg = None if len(rows) == n else f"corrupt: row group {rg} decodes to {len(rows)} rows, its footer says {n}"
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            rows, msg = [], _one_line(f"corrupt: row group {rg} cannot be decoded: {e}")
        if msg is not None:
            rows = [None] * n
        for row in rows:
            yield RawRecord(index, row, msg)
            index += 1


def _checked(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` after a full validation (offsets, UTF-8): damaged Arrow buffers raise
    ArrowInvalid here instead of crashing the interpreter when converted to Python."""
    batch.validate(full=True)
    return batch


def _arrow_batches(path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Schema and batches of an Arrow IPC file or stream (memory-mapped)."""
    source = pa.memory_map(str(path), "r")
    if source.read(6) == b"ARROW1":
        source.seek(0)
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    source.seek(0)
    reader = pa.ipc.open_stream(source)
    return reader.schema, iter(reader)


def arrow_schema(path: str | os.PathLike) -> pa.Schema:
    """The schema of a Parquet file, an Arrow IPC file/stream or a ``datasets`` folder.

    Raises:
        pa.ArrowException / OSError / ValueError: when it cannot be read.
    """
    p = Path(path)
    if p.is_dir():
        return _arrow_batches(hf_data_files(p)[0])[0]
    if detect_format(p) == "parquet":
        return pq.read_schema(p)
    return _arrow_batches(p)[0]


def _iter_arrow(files: list[Path], columns, start: int = 0) -> Iterator[RawRecord]:
    index = start
    for f in files:
        try:
            schema, batches = _arrow_batches(f)
            cols = _project(schema, columns)
            for batch in batches:
                if cols is not None:
                    batch = batch.select(cols)
                for row in _checked(batch).to_pylist():
                    yield RawRecord(index, row, None)
                    index += 1
        except PermissionError as e:
            yield RawRecord(index, None, _one_line(f"unreadable: {e}"))
            index += 1
        except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
            yield RawRecord(index, None, _one_line(f"corrupt: {f.name}: unreadable from record {index} on: {e}"))
            index += 1


def _iter_hf(folder: Path, columns) -> Iterator[RawRecord]:
    try:
        files = hf_data_files(folder)
    except (OSError, ValueError) as e:
        yield RawRecord(0, None, _one_line(f"unreadable: not a readable datasets folder: {e}"))
        return
    yield from _iter_arrow(files, columns)


# -- entry point -----------------------------------------------------------------------------
def iter_records(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    columns: list[str] | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[RawRecord]:
    """Records of one input file (or ``datasets`` folder), as the file holds them.

    Args:
        path: the file or folder.
        fmt: one of :data:`FORMATS`; None detects it from the name (see :func:`detect_format`).
            ``json`` reads a JSON array, or JSONL when the file does not start with ``[``.
        columns: for Parquet / Arrow, the columns to read (dotted names read the top-level
            column they start with); None reads every column. JSON records are always whole.
        max_record_bytes: longer JSONL lines / array elements become ``too_long`` errors.
        batch_rows: rows per Parquet batch held in memory.

    Raises:
        ReaderError: when the path does not exist or its format is unknown.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ReaderError(f"input not found: {p}")
    fmt = fmt or detect_format(p)
    if fmt not in FORMATS:
        raise ReaderError(f"{p}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if p.is_dir() or fmt == "hf":
        if not p.is_dir():
            raise ReaderError(f"{p}: format 'hf' needs a folder written by datasets' save_to_disk")
        yield from _iter_hf(p, columns)
        return
    try:
        open(p, "rb").close()
    except OSError as e:
        yield RawRecord(0, None, _one_line(f"unreadable: {e}"))
        return
    if fmt == "parquet":
        yield from _iter_parquet(p, columns, batch_rows)
        return
    if fmt == "arrow":
        yield from _iter_arrow([p], columns)
        return
    stream = _open_bytes(p)
    with stream:
        try:
            kind = _json_kind(stream) if fmt == "json" else "jsonl"
        except EOFError as e:
            yield RawRecord(0, None, _one_line(f"truncated: stream ends early after 0 records: {e}"))
            return
        except _stream_errors() as e:
            yield RawRecord(0, None, _one_line(f"corrupt: unreadable from record 0 on: {e}"))
            return
        if kind == "json":
            yield from _iter_json_array(stream, max_record_bytes)
            return
        if fmt == "json":
            single = _single_document(stream, max_record_bytes)
            if single is not None:
                yield _check_value(0, "the file", single[0])
                return
    with _open_bytes(p) as stream:
        yield from _iter_jsonl(stream, max_record_bytes)


def _single_document(stream, limit: int) -> tuple[Any] | None:
    """``(value,)`` when the whole (small) stream is one JSON document, e.g. a pretty-printed
    object in a ``.json`` file; None when it is not (then it is read as JSONL)."""
    try:
        data = stream.read(limit + 1)
    except (EOFError, *_stream_errors()):
        return None
    if len(data) > limit or data.count(b"\n", 0, len(data.rstrip())) == 0:
        return None  # too large to be one record, or one line: JSONL reads it the same
    try:
        return (json.loads(data.removeprefix(_BOM).decode("utf-8")),)
    except (ValueError, RecursionError):
        return None
