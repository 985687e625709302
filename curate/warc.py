"""Robust WARC reading: a corrupt or truncated gzip member is reported and skipped, and
reading resumes at the next member, so one bad record never loses the rest of the file.

:func:`iter_warc` yields :class:`WarcItem` objects: either a parsed record (headers, HTTP
status and headers, body bytes) or a corrupt region with its byte offset and the error.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from warcio.archiveiterator import ArchiveIterator

GZIP_MAGIC = b"\x1f\x8b\x08"
CHUNK = 1 << 20


@dataclass
class WarcItem:
    offset: int
    rec_type: str | None = None  # None for a corrupt region
    uri: str | None = None
    date: str | None = None
    record_id: str | None = None
    status: int | None = None
    http_headers: dict[str, str] = field(default_factory=dict)
    warc_headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    error: str | None = None  # corrupt region or oversize record
    oversize: bool = False


def _scan_magic(f, start: int, magic: bytes) -> int | None:
    """File offset of the next ``magic`` at or after ``start``, or None."""
    f.seek(start)
    carry = b""
    pos = start
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            return None
        data = carry + chunk
        k = data.find(magic)
        if k >= 0:
            return pos - len(carry) + k
        carry = data[-(len(magic) - 1):]
        pos += len(chunk)


def iter_gzip_members(f, max_member_bytes: int) -> Iterator[tuple[int, bytes | None, str | None, bool]]:
    """Yield ``(offset, data, error, oversize)`` per gzip member of a seekable binary file.

    A member larger than ``max_member_bytes`` decompressed yields its first bytes only (enough
    for the headers) with ``oversize=True``. A corrupt stretch yields one ``(offset, None, error)``
    covering everything up to the next member that decompresses.
    """
    off = 0
    f.seek(0)
    pending = f.read(CHUNK)
    bad_at: int | None = None
    bad_err = ""
    while pending:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        parts: list[bytes] = []
        size = 0
        oversize = False
        used = 0
        data = pending
        rest = b""
        err = None
        while True:
            try:
                out = d.decompress(data)
            except zlib.error as e:
                err = f"corrupt gzip member: {e}"
                break
            size += len(out)
            if size > max_member_bytes:
                if not oversize:
                    parts.append(out[: max(0, 65536 - (size - len(out)))])
                oversize = True
            else:
                parts.append(out)
            if d.eof:
                used += len(data) - len(d.unused_data)
                rest = d.unused_data
                break
            used += len(data)
            data = f.read(CHUNK)
            if not data:
                err = "truncated gzip member (unexpected end of file)"
                break
        if err is None:
            if bad_at is not None:
                yield bad_at, None, bad_err, False
                bad_at = None
            yield off, b"".join(parts), None, oversize
            off += used
            if not rest:
                f.seek(off)
                rest = f.read(CHUNK)
            pending = rest
            continue
        if bad_at is None:
            bad_at, bad_err = off, err
        nxt = _scan_magic(f, off + 1, GZIP_MAGIC)
        if nxt is None:
            break
        off = nxt
        f.seek(off)
        pending = f.read(CHUNK)
    if bad_at is not None:
        yield bad_at, None, bad_err, False


def _records(it: ArchiveIterator, base: int, max_record_bytes: int, read_body: bool = True) -> Iterator[WarcItem]:
    """Turn warcio records into WarcItems; offsets are ``base`` + the iterator's offsets."""
    for rec in it:
        if not rec.format.startswith("warc"):
            raise ValueError(f"not a WARC record (parsed as {rec.format})")
        item = WarcItem(offset=0, rec_type=rec.rec_type)
        item.warc_headers = {k: v for k, v in rec.rec_headers.headers}
        item.uri = rec.rec_headers.get_header("WARC-Target-URI")
        item.date = rec.rec_headers.get_header("WARC-Date")
        item.record_id = rec.rec_headers.get_header("WARC-Record-ID")
        if rec.http_headers is not None:
            try:
                item.status = int(rec.http_headers.get_statuscode() or 0)
            except ValueError:
                item.status = 0
            item.http_headers = {k.lower(): v for k, v in rec.http_headers.headers}
        length = int(rec.rec_headers.get_header("Content-Length") or 0)
        if not read_body or length > max_record_bytes:
            item.oversize = True
            item.error = f"record larger than {max_record_bytes} bytes"
        else:
            item.body = rec.content_stream().read()
        # warcio computes the offset by reading to the end of the record: body first.
        item.offset = base + it.get_record_offset()
        yield item


def iter_warc(path: str, max_record_bytes: int = 64 << 20) -> Iterator[WarcItem]:
    """Yield every record (and every corrupt region) of a WARC or WARC.gz file, in order."""
    with open(path, "rb") as f:
        head = f.read(2)
        gz = head == b"\x1f\x8b"
        if gz:
            for off, data, err, oversize in iter_gzip_members(f, max_record_bytes):
                if data is None:
                    yield WarcItem(offset=off, error=err)
                    continue
                try:
                    it = ArchiveIterator(io.BytesIO(data))
                    items = list(_records(it, off, max_record_bytes, read_body=not oversize))
                except Exception as e:  # warcio raises several types on malformed headers
                    yield WarcItem(offset=off, error=f"malformed WARC record: {type(e).__name__}: {e}")
                    continue
                if not items:
                    yield WarcItem(offset=off, error="gzip member holds no WARC record")
                yield from items
        else:
            yield from _iter_plain(f, max_record_bytes)


def _iter_plain(f, max_record_bytes: int) -> Iterator[WarcItem]:
    pos = 0
    while True:
        f.seek(pos)
        it = ArchiveIterator(f)  # offsets are absolute: the iterator starts at f.tell()
        try:
            yield from _records(it, 0, max_record_bytes)
            return
        except Exception as e:  # warcio raises several types on malformed records
            bad = it.offset
            yield WarcItem(offset=bad, error=f"malformed WARC record: {type(e).__name__}: {e}")
            nxt = _scan_magic(f, bad + 1, b"WARC/1.")
            if nxt is None:
                return
            pos = nxt
