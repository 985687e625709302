"""Robust WARC reading: every record the file holds is yielded once, as a parsed record or as
a corrupt one with its byte offset and the error, so one bad record never loses the rest.

Records are framed by this module, not by trusting ``Content-Length`` alone: a record is
accepted only when its block is followed by the ``CRLF CRLF`` trailer and then by the next
``WARC/1.x`` header line (or the end of the data). A record whose length lies (too large: it
would swallow the records after it; too small: it would truncate its document) becomes one
corrupt item reaching up to the next header line found after it, and reading resumes
there. The same framing applies inside every gzip member. A corrupt or truncated gzip member
is reported and skipped, and reading resumes at the next member that decompresses.

:func:`iter_warc` yields :class:`WarcItem` objects; :func:`split_records` is the framing
step on its own (offsets of records in a buffer).
"""

from __future__ import annotations

import io
import mmap
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from warcio.archiveiterator import ArchiveIterator

GZIP_MAGIC = b"\x1f\x8b\x08"
CHUNK = 1 << 20
MAX_HEADER_BYTES = 1 << 16  # a WARC header block longer than this is not a header
HEAD_BYTES = 1 << 16  # what is kept of an oversize record (enough for its headers)

_HEADER_AT = re.compile(rb"WARC/\d+\.\d+\r?\n")
# The start of a header line cut by the end of the data ("WARC/1.", "WA", ...): what may
# follow a record's trailer.
_HEADER_CUT = re.compile(rb"W(?:A(?:R(?:C(?:/[0-9.]*\r?)?)?)?)?\Z")
# Where a damaged region ends: a header line (not always at a line start: garbage may precede
# it), or one cut after its "WARC/" at the start of the last line (a shorter cut is not told
# from a "WARC-..." header field).
_HEADER_NEXT = re.compile(rb"WARC/\d+\.\d+\r?\n|(?<=\n)WARC/[0-9.]*\r?\Z")


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
    unreadable: bool = False  # the input could not be read (OSError): ``error`` says why


@dataclass
class Frame:
    """One record (or corrupt region) found by :func:`split_records` in a buffer.

    Attributes:
        start: offset of the record's first byte (its ``WARC/`` line) in the buffer.
        end: offset just past its trailer (or past the corrupt region).
        block_start: offset of its content block (``start`` when the header is unreadable).
        length: its declared ``Content-Length`` (None when missing or unreadable).
        headers: its WARC header fields, names as written (empty when unreadable).
        error: why the region is not a well-framed record, or None.
    """

    start: int
    end: int
    block_start: int
    length: int | None
    headers: dict[str, str]
    error: str | None = None


def _parse_header(buf, start: int) -> tuple[int, dict[str, str]] | None:
    """(block start, header fields) of the header block at ``start``, or None when it has no end."""
    limit = min(len(buf), start + MAX_HEADER_BYTES)
    crlf = buf.find(b"\r\n\r\n", start, limit)
    lf = buf.find(b"\n\n", start, limit)
    if crlf < 0 and lf < 0:
        return None
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        end, sep = crlf, 4
    else:
        end, sep = lf, 2
    lines = bytes(buf[start:end]).decode("latin-1").splitlines()[1:]
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip()] = value.strip()
    return end + sep, headers


def _header(headers: dict[str, str], name: str) -> str | None:
    low = name.lower()
    return next((v for k, v in headers.items() if k.lower() == low), None)


def _next_header(buf, start: int) -> int | None:
    """Offset of the next ``WARC/x.y`` header line at or after ``start``."""
    m = _HEADER_NEXT.search(buf, start)
    return m.start() if m else None


def _skip_blank(buf, pos: int) -> int:
    """The offset after the blank lines (and NUL padding, as a crashed writer leaves) at ``pos``."""
    n = len(buf)
    while pos < n and buf[pos:pos + 1] in (b"\r", b"\n", b"\x00"):
        pos += 1
    return pos


def split_records(buf) -> Iterator[Frame]:
    """Frame the records of an uncompressed WARC buffer (bytes or mmap), in order.

    Every byte outside the blank lines between records belongs to exactly one frame, so the
    frames count the records the data holds: a record whose ``Content-Length`` does not land
    on its trailer and the next header is a corrupt frame up to that next header.
    """
    n = len(buf)
    pos = _skip_blank(buf, 0)
    while pos < n:
        if not _HEADER_AT.match(buf, pos):
            nxt = _next_header(buf, pos + 1)
            end = n if nxt is None else nxt
            yield Frame(pos, end, pos, None, {}, f"no WARC record header at offset {pos} ({end - pos} bytes skipped)")
            pos = end
            continue
        parsed = _parse_header(buf, pos)
        if parsed is None:
            nxt = _next_header(buf, pos + 1)
            end = n if nxt is None else nxt
            yield Frame(pos, end, pos, None, {}, "WARC record header block has no end")
            pos = end
            continue
        block, headers = parsed
        raw_len = _header(headers, "Content-Length")
        length = int(raw_len) if raw_len is not None and raw_len.isdigit() else None
        if length is None:
            nxt = _next_header(buf, block)
            end = n if nxt is None else nxt
            yield Frame(pos, end, block, None, headers, f"missing or invalid Content-Length ({raw_len!r})")
            pos = end
            continue
        trailer = b"\r\n\r\n" if buf[block - 4:block] == b"\r\n\r\n" else b"\n\n"
        stop = block + length
        after = stop + len(trailer)
        if after <= n and buf[stop:after] == trailer:
            nxt_pos = _skip_blank(buf, after)
            if nxt_pos >= n or _HEADER_AT.match(buf, nxt_pos) or _HEADER_CUT.match(buf, nxt_pos):
                yield Frame(pos, after, block, length, headers)
                pos = nxt_pos
                continue
        nxt = _next_header(buf, block)
        if nxt is None and stop >= n:
            why = f"truncated record: Content-Length {length} runs past the end of the data ({n - block} bytes left)"
        elif nxt is None:
            why = f"Content-Length {length} does not match the record (no record end at offset {stop})"
        else:
            why = f"Content-Length {length} does not match the record (the next record header is at offset {nxt})"
        end = n if nxt is None else nxt
        yield Frame(pos, end, block, length, headers, why)
        pos = end


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


def _starts_a_record(f, off: int) -> bool:
    """Whether the gzip data at ``off`` starts decompressing into a ``WARC/`` line (or, cut
    short, into the start of one): a real member start (a damaged one), not a stray magic
    number inside compressed data."""
    f.seek(off)
    raw = f.read(4096)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = b""
    try:
        for k in range(0, len(raw), 64):
            out += d.decompress(raw[k:k + 64])
            if len(out) >= 5 or d.eof:
                break
    except zlib.error:
        pass
    return out.startswith(b"WARC/") or (0 < len(out) < 5 and b"WARC/".startswith(out))


def iter_gzip_members(f, max_member_bytes: int) -> Iterator[tuple[int, bytes | None, str | None, bool, int]]:
    """Yield ``(offset, data, error, oversize, size)`` per gzip member of a seekable binary file.

    A member larger than ``max_member_bytes`` decompressed yields its first bytes only (enough
    for the headers) with ``oversize=True``; ``size`` is its whole decompressed size. A corrupt
    stretch yields one ``(offset, None, error, False, 0)`` per damaged member whose start is
    still readable, covering everything up to the next member that decompresses.
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
                    parts.append(out[: max(0, HEAD_BYTES - (size - len(out)))])
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
                yield bad_at, None, bad_err, False, 0
                bad_at = None
            yield off, b"".join(parts), None, oversize, size
            off += used
            if not rest:
                f.seek(off)
                rest = f.read(CHUNK)
            pending = rest
            continue
        if bad_at is None:
            bad_at, bad_err = off, err
        elif _starts_a_record(f, off):  # a second damaged record: its own item
            yield bad_at, None, bad_err, False, 0
            bad_at, bad_err = off, err
        nxt = _scan_magic(f, off + 1, GZIP_MAGIC)
        if nxt is None:
            break
        off = nxt
        f.seek(off)
        pending = f.read(CHUNK)
    if bad_at is not None:
        yield bad_at, None, bad_err, False, 0


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


def _corrupt(offset: int, fr: Frame) -> WarcItem:
    wtype = _header(fr.headers, "WARC-Type")
    detail = fr.error if not wtype else f"{fr.error} [WARC-Type {wtype}]"
    return WarcItem(offset=offset, uri=_header(fr.headers, "WARC-Target-URI"),
                    record_id=_header(fr.headers, "WARC-Record-ID"), error=detail)


def _framed(buf, base: int, max_record_bytes: int) -> Iterator[WarcItem]:
    """Items of every frame of ``buf``; offsets are ``base`` + offsets in ``buf``."""
    for fr in split_records(buf):
        if fr.error is not None:
            yield _corrupt(base + fr.start, fr)
            continue
        big = fr.length is not None and fr.length > max_record_bytes
        data = bytes(buf[fr.start: min(fr.end, fr.block_start + HEAD_BYTES)] if big else buf[fr.start:fr.end])
        try:
            yield from _records(ArchiveIterator(io.BytesIO(data)), base + fr.start, max_record_bytes,
                                read_body=not big)
        except Exception as e:  # warcio raises several types on malformed headers
            yield WarcItem(offset=base + fr.start, uri=_header(fr.headers, "WARC-Target-URI"),
                           error=f"malformed WARC record: {type(e).__name__}: {e}")


def _oversize_member(off: int, data: bytes, size: int, max_record_bytes: int) -> Iterator[WarcItem]:
    """The one record of a member too large to hold in memory, checked against its size."""
    parsed = _parse_header(data, 0) if _HEADER_AT.match(data) else None
    if parsed is None:
        yield WarcItem(offset=off, error=f"gzip member of {size} bytes holds no readable WARC header")
        return
    block, headers = parsed
    raw_len = _header(headers, "Content-Length")
    length = int(raw_len) if raw_len is not None and raw_len.isdigit() else None
    if length is None or block + length + 4 != size:
        fr = Frame(0, size, block, length, headers,
                   f"Content-Length {raw_len} does not match the gzip member ({size} bytes decompressed)")
        yield _corrupt(off, fr)
        return
    try:
        yield from _records(ArchiveIterator(io.BytesIO(data)), off, max_record_bytes, read_body=False)
    except Exception as e:  # warcio raises several types on malformed headers
        yield WarcItem(offset=off, error=f"malformed WARC record: {type(e).__name__}: {e}")


def iter_warc(path: str, max_record_bytes: int = 64 << 20) -> Iterator[WarcItem]:
    """Yield every record (and every corrupt region) of a WARC or WARC.gz file, in order."""
    with open(path, "rb") as f:
        head = f.read(2)
        if head == b"\x1f\x8b":
            for off, data, err, oversize, size in iter_gzip_members(f, max_record_bytes):
                if data is None:
                    yield WarcItem(offset=off, error=err)
                elif oversize:
                    yield from _oversize_member(off, data, size, max_record_bytes)
                else:
                    items = list(_framed(data, off, max_record_bytes))
                    if not items:
                        yield WarcItem(offset=off, error="gzip member holds no WARC record")
                    yield from items
            return
        if os.fstat(f.fileno()).st_size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield from _framed(mm, 0, max_record_bytes)
