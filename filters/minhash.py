"""Shingling, MinHash signatures, LSH banding and exact Jaccard, vectorised over documents.

Everything here works on batches of documents with numpy; the only per-document Python work
is ``str.lower``/``str.encode`` (C calls) and, in :func:`sort_sets`, one small ``np.sort`` per
document. There is no Python loop over tokens or shingles: tokens are found and hashed on the
UTF-8 bytes of the whole batch at once.

Hash family. Signatures use datasketch's default (``affine32``) permutation scheme with the
very same parameters (:func:`affine32_permutations` draws them exactly as
``datasketch.MinHash(num_perm, seed)`` does): the 32-bit shingle hash is pre-mixed with the
MurmurHash3 finalizer and each permutation is ``a_k * h + b_k mod 2**32``. Only the shingle
hash differs from datasketch's default (``sha1`` of each shingle, one Python call per
shingle): here it is a 64-bit hash of the shingle's tokens computed with numpy (a polynomial
over each token's bytes, a polynomial over the n token hashes, MurmurHash3 finalizers), of
which the top 32 bits feed the permutations. Given the same 32-bit shingle hashes the
signatures are bit-identical to ``datasketch.MinHash`` (tested by handing datasketch our
hashes through its ``hashfunc`` argument), and against datasketch's own sha1 hashing the
Jaccard estimates agree within estimator error (tested too).

Shingles. Word n-grams (default 5) over exactly the tokens of ``text.lower().split()``;
character n-grams over the text with whitespace removed for documents written mostly in
scripts without spaces between words (Han, Hiragana, Katakana). The 64-bit shingle hashes
double as the shingle sets for exact-Jaccard verification (two distinct shingles collide with
probability about 2**-64).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

U32 = np.uint32
U64 = np.uint64
MAX_HASH32 = np.uint32(0xFFFFFFFF)

# Odd 64-bit multipliers (digits of pi, e and sqrt(2), forced odd) for polynomial combination.
_K_BYTE = np.uint64(0x243F6A8885A308D3)
_Q = (
    np.array(
        [
            0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
            0xB7E151628AED2A6B, 0x6A09E667F3BCC909, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B,
        ],
        dtype=np.uint64,
    )
    | np.uint64(1)
)
_K_LEN = np.uint64(0x9FB21C651E98DF25)
_SALT_WORD = np.uint64(0x5A17_0000_0000_0001)
_SALT_CHAR = np.uint64(0xC4A2_0000_0000_0003)
_SALT_BAND = np.uint64(0xBA4D_5EED_0000_0005)


def fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3 32-bit finalizer (a bijection on uint32), as datasketch applies it."""
    x = np.asarray(x, dtype=U32)
    x = x ^ (x >> U32(16))
    x = x * U32(0x85EBCA6B)
    x = x ^ (x >> U32(13))
    x = x * U32(0xC2B2AE35)
    return x ^ (x >> U32(16))


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3 64-bit finalizer (a bijection on uint64)."""
    x = np.asarray(x, dtype=U64)
    x = x ^ (x >> U64(33))
    x = x * U64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> U64(33))
    x = x * U64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> U64(33))


# --------------------------------------------------------------------------- shingling


@dataclass
class ShingleBatch:
    """Shingle hashes of a batch of documents: ``values[offsets[i]:offsets[i+1]]`` is doc i.

    ``values`` are 64-bit shingle hashes in text order (repeats kept); ``char_mode[i]`` says
    whether doc i was shingled by characters. When every document was shingled by words,
    ``units``/``unit_counts`` are the token hashes and tokens per document (reused for the
    exact hash, see :meth:`Shingler.exact_hashes`).
    """

    values: np.ndarray
    offsets: np.ndarray
    char_mode: np.ndarray
    units: np.ndarray | None = None
    unit_counts: np.ndarray | None = None

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]


def _is_spaceless_script(cp: np.ndarray) -> np.ndarray:
    """Han, Hiragana and Katakana code points (scripts written without spaces between words)."""
    return (
        ((cp >= 0x3040) & (cp <= 0x30FF))
        | ((cp >= 0x3400) & (cp <= 0x4DBF))
        | ((cp >= 0x4E00) & (cp <= 0x9FFF))
        | ((cp >= 0xF900) & (cp <= 0xFAFF))
        | ((cp >= 0xFF66) & (cp <= 0xFF9F))
        | ((cp >= 0x20000) & (cp <= 0x3134F))
    )


def _window_hashes(units: np.ndarray, counts: np.ndarray, n: int, salt: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """Hash every window of ``n`` consecutive units within each document.

    Args:
        units: 64-bit unit hashes (tokens or characters) of all documents, concatenated.
        counts: units per document.
        n: window length. A document with fewer than ``n`` (but some) units gets one shingle
            made of all its units.
        salt: distinguishes shingle kinds (word vs character).

    Returns:
        (shingle hashes in document order, shingles per document).
    """
    total = int(units.shape[0])
    counts = counts.astype(np.int64)
    ndoc = counts.shape[0]
    if total == 0:
        return np.empty(0, U64), np.zeros(ndoc, np.int64)
    starts = np.zeros(ndoc, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    ends = starts + counts
    padded = np.concatenate([units, np.zeros(n - 1, U64)]) if n > 1 else units
    acc = np.zeros(total, U64)
    short = (counts > 0) & (counts < n)
    short_vals = np.zeros(ndoc, U64)
    for j in range(n):
        acc += padded[j : j + total] * _Q[j % len(_Q)] + U64(j)
        sel = short & (counts == j + 1)
        if sel.any():
            short_vals[sel] = acc[starts[sel]]
    # Keep every window that fits in its document, and the first position of a short one
    # (holding the hash of all its units): masks over the few positions to drop, not all.
    keep = np.ones(total, bool)
    if n > 1:
        full = counts >= n
        keep[(ends[full][:, None] - np.arange(1, n)).ravel()] = False
        if short.any():
            tail = starts[short][:, None] + np.arange(1, n - 1)
            keep[tail[tail < ends[short][:, None]]] = False
            acc[starts[short]] = short_vals[short]
    out = fmix64(acc[keep] ^ salt)
    per_doc = np.where(counts >= n, counts - n + 1, np.where(counts > 0, 1, 0))
    return out, per_doc


# Whitespace as ``str.split()`` sees it: ASCII bytes, and the UTF-8 encodings of the others.
_ASCII_WS = np.zeros(256, dtype=bool)
_ASCII_WS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
UNICODE_WS = "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_UNICODE_WS_BYTES = tuple(c.encode("utf-8") for c in UNICODE_WS)
_UNICODE_WS_LEADS = np.array(sorted({b[0] for b in _UNICODE_WS_BYTES}), dtype=np.uint8)
# The lead bytes as runs of consecutive values (found by comparisons: faster than np.isin's table).
_UNICODE_WS_LEAD_RUNS = [
    (int(r[0]), int(r[-1]))
    for r in np.split(_UNICODE_WS_LEADS, np.flatnonzero(np.diff(_UNICODE_WS_LEADS.astype(int)) != 1) + 1)
]


def _mark_unicode_ws(buf: np.ndarray, ws: np.ndarray) -> None:
    """Set ``ws`` on every byte of the multi-byte UTF-8 whitespace characters in ``buf``."""
    is_lead = np.zeros(buf.shape[0], bool)
    for lo, hi in _UNICODE_WS_LEAD_RUNS:
        is_lead |= (buf - np.uint8(lo)) <= np.uint8(hi - lo)
    lead = np.flatnonzero(is_lead)
    if lead.size == 0:
        return
    padded = np.concatenate([buf, np.zeros(2, np.uint8)])
    for seq in _UNICODE_WS_BYTES:
        hit = lead
        for k, byte in enumerate(seq):
            hit = hit[padded[hit + k] == byte]
        for k in range(len(seq)):
            ws[hit + k] = True


class _PowerTable:
    """Powers K**i and K**-i (mod 2**64) of the byte multiplier, grown on demand."""

    def __init__(self) -> None:
        self.pow = np.ones(1, U64)
        self.inv = np.ones(1, U64)

    def ensure(self, n: int) -> None:
        if self.pow.shape[0] >= n:
            return
        n = 1 << max(16, (n - 1).bit_length())
        self.pow = _powers(_K_BYTE, n)
        self.inv = _powers(np.uint64(pow(int(_K_BYTE), -1, 1 << 64)), n)


def _encode(texts: Sequence[str | None], lowercase: bool) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of the (lowered) texts, each followed by a newline, and each text's start
    offset (so every text owns a non-empty byte range ending in whitespace)."""
    parts = [((t or "").lower() if lowercase else (t or "")).encode("utf-8", "surrogatepass") for t in texts]
    lens = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    starts = np.zeros(len(parts), np.int64)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    return np.frombuffer(b"\n".join(parts) + b"\n", dtype=np.uint8), starts


def _whitespace(buf: np.ndarray) -> np.ndarray:
    """Bytes that belong to a whitespace character as ``str.split()`` defines it."""
    # The ASCII whitespace bytes (9-13, 28-31, 32, as in ``_ASCII_WS``) by comparisons,
    # several times faster than a table lookup per byte.
    ws = (buf == 32) | ((buf - np.uint8(9)) <= np.uint8(4)) | ((buf - np.uint8(28)) <= np.uint8(3))
    if buf.size and (buf >= 0x80).any():
        _mark_unicode_ws(buf, ws)
    return ws


def _codepoints(buf: np.ndarray, lead: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Code points of the UTF-8 characters whose first bytes are at ``lead`` in ``buf``."""
    p = np.concatenate([buf, np.zeros(3, np.uint8)])
    b0 = p[lead].astype(np.uint32)
    b1 = (p[lead + 1] & 0x3F).astype(np.uint32)
    b2 = (p[lead + 2] & 0x3F).astype(np.uint32)
    b3 = (p[lead + 3] & 0x3F).astype(np.uint32)
    cp = b0.copy()
    m = b0 >= 0xF0
    cp[m] = ((b0[m] & 0x07) << 18) | (b1[m] << 12) | (b2[m] << 6) | b3[m]
    m = (b0 >= 0xE0) & (b0 < 0xF0)
    cp[m] = ((b0[m] & 0x0F) << 12) | (b1[m] << 6) | b2[m]
    m = (b0 >= 0xC0) & (b0 < 0xE0)
    cp[m] = ((b0[m] & 0x1F) << 6) | b1[m]
    return lead, cp


def _tokens(buf: np.ndarray, ws: np.ndarray, table: _PowerTable) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and 64-bit hashes of the whitespace-separated tokens of ``buf``.

    A token's hash is the polynomial ``sum(byte_i * K**i)`` over its bytes (``i`` counted from
    the token start, via one table of powers and one of inverse powers) combined with the
    token length by the 64-bit MurmurHash3 finalizer: numpy over the whole buffer, no loop.
    The per-token sums are differences of one running sum (mod 2**64) at the token ends, so
    the whitespace between tokens never needs zeroing.
    """
    # Token boundaries are the changes of the whitespace flag, whitespace assumed around
    # ``buf``: they alternate start, end, start, end...
    flag = np.empty(ws.size + 2, np.int8)
    flag[0] = flag[-1] = 1
    flag[1:-1] = ws.view(np.int8)
    edges = np.flatnonzero(flag[1:] != flag[:-1])
    starts, ends = edges[0::2], edges[1::2]
    if starts.size == 0:
        return starts, np.empty(0, U64)
    table.ensure(buf.size)
    run = np.multiply(buf, table.pow[: buf.size], dtype=U64)
    np.cumsum(run, out=run)
    th = run[ends - 1] - np.where(starts > 0, run[starts - 1], U64(0))
    th *= table.inv[starts]
    return starts, fmix64(th ^ ((ends - starts).astype(U64) * _K_LEN))


def _doc_of(positions: np.ndarray, doc_start: np.ndarray) -> np.ndarray:
    return np.searchsorted(doc_start, positions, side="right") - 1


# --------------------------------------------------------------------------- exact hashing

NORMALIZATIONS = ("nfkc", "lower", "whitespace", "punct", "digits")
_PUNCT_TABLE: dict[int, None] | None = None
_DIGITS = str.maketrans("0123456789", "0000000000")
_K_SEQ = (np.uint64(0x8CB92BA72F3D8DD7), np.uint64(0xA0761D6478BD642F))


def _punct_table() -> dict[int, None]:
    global _PUNCT_TABLE
    if _PUNCT_TABLE is None:
        import sys

        _PUNCT_TABLE = {
            i: None for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")
        }
    return _PUNCT_TABLE


def _check_steps(steps: Sequence[str]) -> None:
    unknown = set(steps) - set(NORMALIZATIONS)
    if unknown:
        raise ValueError(f"unknown normalisation step(s) {sorted(unknown)}; known: {NORMALIZATIONS}")


def _prenormalize(text: str | None, steps: Sequence[str]) -> str:
    t = text or ""
    if "nfkc" in steps:
        t = unicodedata.normalize("NFKC", t)
    if "lower" in steps:
        t = t.lower()
    if "punct" in steps:
        t = t.translate(_punct_table())
    if "digits" in steps:
        t = t.translate(_DIGITS)
    return t


def normalize_text(text: str | None, steps: Sequence[str]) -> str:
    """Normalise ``text`` for exact-duplicate hashing.

    Args:
        text: the document text (None counts as empty).
        steps: applied in this order when present: ``nfkc`` (Unicode NFKC), ``lower``,
            ``punct`` (drop Unicode punctuation), ``digits`` (every ASCII digit becomes 0),
            ``whitespace`` (runs of whitespace become one space, ends stripped).
    """
    _check_steps(steps)
    t = _prenormalize(text, steps)
    if "whitespace" in steps:
        t = " ".join(t.split())
    return t


def _powers(base: np.uint64, n: int) -> np.ndarray:
    t = np.full(max(n, 1), base, U64)
    t[0] = 1
    return np.cumprod(t, out=t)


def sequence_hashes(units: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """128-bit hash of each document's sequence of 64-bit units, as ``(n, 2)`` uint64.

    Two independent polynomial hashes over the units (position within the document as the
    exponent) mixed with the unit count; a document without units gets the empty-sequence hash.
    """
    counts = np.asarray(counts, np.int64)
    n = counts.shape[0]
    out = np.empty((n, 2), U64)
    starts = np.zeros(n, np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    nz = counts > 0
    pos = _ranks_within(counts)
    maxc = int(counts.max()) if n else 0
    for col, base in enumerate(_K_SEQ):
        acc = np.zeros(n, U64)
        if units.shape[0]:
            acc[nz] = np.add.reduceat(units * _powers(base, maxc)[pos], starts[nz])
        out[:, col] = fmix64(acc ^ fmix64(counts.astype(U64) * base + U64(col)))
    return out


def exact_hashes(texts: Sequence[str | None], steps: Sequence[str], table: _PowerTable | None = None) -> np.ndarray:
    """128-bit hashes of the normalised texts, as an ``(n, 2)`` uint64 array.

    With the ``whitespace`` step the hash is that of the token sequence of the normalised
    text (tokens as ``str.split()`` gives them, hashed with numpy), which identifies
    ``" ".join(text.split())`` without building it; otherwise xxh3-128 of the UTF-8 bytes.
    """
    _check_steps(steps)
    pre = [_prenormalize(t, steps) for t in texts]
    if "whitespace" in steps and pre:
        buf, doc_start = _encode(pre, False)
        starts, units = _tokens(buf, _whitespace(buf), table or _PowerTable())
        return sequence_hashes(units, np.bincount(_doc_of(starts, doc_start), minlength=len(pre)))
    out = np.empty((len(texts), 2), dtype=U64)
    for i, t in enumerate(pre):
        d = xxhash.xxh3_128_intdigest(t.encode("utf-8", "surrogatepass"))
        out[i, 0] = d >> 64
        out[i, 1] = d & 0xFFFFFFFFFFFFFFFF
    return out


class Shingler:
    """Turns texts into 64-bit shingle hashes (see the module docstring).

    Args:
        mode: ``word`` (word n-grams), ``char`` (character n-grams) or ``auto`` (character
            n-grams for documents whose share of Han/Hiragana/Katakana characters is at least
            ``cjk_ratio``, word n-grams otherwise).
        word_ngram: words per word shingle.
        char_ngram: characters per character shingle.
        lowercase: lowercase before shingling.
        cjk_ratio: threshold of the ``auto`` mode.
    """

    def __init__(
        self,
        mode: str = "auto",
        word_ngram: int = 5,
        char_ngram: int = 5,
        lowercase: bool = True,
        cjk_ratio: float = 0.3,
    ):
        if mode not in ("word", "char", "auto"):
            raise ValueError(f"shingle mode must be word, char or auto, got {mode!r}")
        if word_ngram < 1 or char_ngram < 1:
            raise ValueError("n-gram sizes must be >= 1")
        self.mode = mode
        self.word_ngram = word_ngram
        self.char_ngram = char_ngram
        self.lowercase = lowercase
        self.cjk_ratio = cjk_ratio
        self._table = _PowerTable()

    def tokens(self, text: str | None) -> list[str]:
        """The word tokens of ``text`` (reference implementation, for tests and tools)."""
        t = text or ""
        return (t.lower() if self.lowercase else t).split()

    def _char_mode(self, buf: np.ndarray, ws: np.ndarray, doc_start: np.ndarray) -> np.ndarray:
        n = doc_start.shape[0]
        if self.mode != "auto":
            return np.full(n, self.mode == "char", dtype=bool)
        # Han/Kana code points all encode with a lead byte >= 0xE3 (never a continuation byte).
        hi = np.flatnonzero(buf >= 0xE3)
        if hi.size == 0:
            return np.zeros(n, bool)
        _, cp = _codepoints(buf, hi)
        n_cjk = np.bincount(_doc_of(hi[_is_spaceless_script(cp)], doc_start), minlength=n)
        if not n_cjk.any():
            return np.zeros(n, bool)
        is_char = ((buf & 0xC0) != 0x80) & ~ws
        n_chars = np.add.reduceat(is_char, doc_start, dtype=np.int64)
        return (n_cjk > 0) & (n_cjk >= self.cjk_ratio * np.maximum(n_chars, 1))

    def __call__(self, texts: Sequence[str | None]) -> ShingleBatch:
        n = len(texts)
        if n == 0:
            return ShingleBatch(np.empty(0, U64), np.zeros(1, np.int64), np.zeros(0, bool))
        buf, doc_start = _encode(texts, self.lowercase)
        ws = _whitespace(buf)
        cmode = self._char_mode(buf, ws, doc_start)
        parts = []
        word_units = None
        if not cmode.all():
            starts, units = _tokens(buf, ws, self._table)
            ntok = np.diff(np.append(np.searchsorted(starts, doc_start), starts.size))
            if cmode.any():
                units = units[~np.repeat(cmode, ntok)]
                ntok[cmode] = 0
            parts.append(_window_hashes(units, ntok, self.word_ngram, _SALT_WORD))
            if not cmode.any():
                word_units = (units, ntok)
        if cmode.any():
            lead = np.flatnonzero(((buf & 0xC0) != 0x80) & ~ws & np.repeat(cmode, np.diff(np.append(doc_start, buf.size))))
            _, cp = _codepoints(buf, lead)
            units = fmix64(cp.astype(U64) + _SALT_CHAR)
            parts.append(_window_hashes(units, np.bincount(_doc_of(lead, doc_start), minlength=n), self.char_ngram, _SALT_CHAR))
        if len(parts) == 1:
            values, per = parts[0]
        else:
            per = parts[0][1] + parts[1][1]
            values = np.empty(int(per.sum()), U64)
            off = np.zeros(n, np.int64)
            np.cumsum(per[:-1], out=off[1:])
            for vals, cnt in parts:
                values[np.repeat(off, cnt) + _ranks_within(cnt)] = vals
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(per, out=offsets[1:])
        if word_units is None:
            return ShingleBatch(values, offsets, cmode)
        return ShingleBatch(values, offsets, cmode, word_units[0], word_units[1])

    def exact_hashes(self, texts: Sequence[str | None], steps: Sequence[str], batch: ShingleBatch | None = None) -> np.ndarray:
        """:func:`exact_hashes` of ``texts``, reusing the token hashes of ``batch`` (the
        shingles of the same texts) when the normalisation amounts to this shingler's
        tokenisation (``whitespace``, plus ``lower`` exactly when the shingler lowercases)."""
        same = set(steps) == ({"whitespace", "lower"} if self.lowercase else {"whitespace"})
        if same and batch is not None and batch.units is not None:
            return sequence_hashes(batch.units, batch.unit_counts)
        return exact_hashes(texts, steps, self._table)


def sorted_unique(x: np.ndarray, return_counts: bool = False):
    """``np.unique`` by sorting (numpy 2's hash-based unique is far slower on uint64 here)."""
    x = np.sort(np.asarray(x))
    if x.shape[0] == 0:
        return (x, np.empty(0, np.int64)) if return_counts else x
    first = np.empty(x.shape[0], bool)
    first[0] = True
    np.not_equal(x[1:], x[:-1], out=first[1:])
    if not return_counts:
        return x[first]
    idx = np.flatnonzero(first)
    return x[idx], np.diff(np.append(idx, x.shape[0]))


def _ranks_within(counts: np.ndarray) -> np.ndarray:
    """For segments of the given lengths, the position of each element within its segment."""
    total = int(counts.sum())
    starts = np.zeros(counts.shape[0], np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


ranks_within = _ranks_within


def sort_sets(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's values sorted and deduplicated: returns (values, offsets) of the sets.

    Sorting runs per document (small cache-resident sorts, one numpy call per document; a
    global two-key sort is several times slower), deduplication is vectorised.
    """
    values = np.array(values, dtype=U64, copy=True)
    counts = np.diff(offsets)
    for i in np.flatnonzero(counts > 1):
        values[offsets[i] : offsets[i + 1]].sort()
    keep = np.ones(values.shape[0], bool)
    if values.shape[0] > 1:
        keep[1:] = values[1:] != values[:-1]
        keep[offsets[1:-1][counts[1:] > 0]] = True
    new_counts = np.add.reduceat(keep, offsets[:-1], dtype=np.int64) if values.shape[0] else counts.copy()
    new_counts[counts == 0] = 0
    new_off = np.zeros(counts.shape[0] + 1, np.int64)
    np.cumsum(new_counts, out=new_off[1:])
    return values[keep], new_off


def jaccard_pairs(
    values: np.ndarray,
    offsets: np.ndarray,
    ia: np.ndarray,
    ib: np.ndarray,
    max_elements: int = 1 << 19,
) -> np.ndarray:
    """Exact Jaccard similarity of document pairs on their sets of 64-bit shingle hashes.

    Per block of pairs, both sides of every pair become keys ``pair << 32 | value >> 32``:
    two sorted runs, which a stable argsort merges in linear time; neighbours with equal keys
    and equal low 32 bits are the intersections. A pair in which three values share a key
    (two distinct values of one side with the same high 32 bits, about one pair in 10**4)
    is recounted exactly with ``np.intersect1d``.

    Args:
        values, offsets: ``values[offsets[i]:offsets[i+1]]`` is doc i's set, sorted and
            without repeats (see :func:`sort_sets`).
        ia, ib: document indices of each pair.
        max_elements: bound on the set elements merged at once (memory).

    Returns:
        float64 Jaccard per pair (1.0 for two empty sets).
    """
    ia = np.asarray(ia, np.int64)
    ib = np.asarray(ib, np.int64)
    out = np.empty(ia.shape[0], np.float64)
    counts = np.diff(offsets)
    sizes = counts[ia] + counts[ib]
    hi = (values >> U64(32)).astype(U64)
    lo = (values & U64(0xFFFFFFFF)).astype(np.uint32)
    start = 0
    while start < ia.shape[0]:
        cum = np.cumsum(sizes[start:])
        stop = start + max(1, int(np.searchsorted(cum, max_elements, side="right")))
        a, b = ia[start:stop], ib[start:stop]
        na, nb = counts[a], counts[b]
        npair = stop - start
        pid = np.arange(npair, dtype=U64) << U64(32)
        src_a = np.repeat(offsets[a], na) + _ranks_within(na)
        src_b = np.repeat(offsets[b], nb) + _ranks_within(nb)
        k = np.concatenate([np.repeat(pid, na) | hi[src_a], np.repeat(pid, nb) | hi[src_b]])
        order = np.argsort(k, kind="stable")
        k = k[order]
        low = np.concatenate([lo[src_a], lo[src_b]])[order]
        same_key = k[1:] == k[:-1]
        hit = same_key & (low[1:] == low[:-1])
        inter = np.bincount((k[1:][hit] >> U64(32)).astype(np.int64), minlength=npair)
        crowded = same_key[1:] & same_key[:-1]
        for p in np.unique((k[1:-1][crowded] >> U64(32)).astype(np.int64)):
            x, y = a[p], b[p]
            inter[p] = np.intersect1d(
                values[offsets[x] : offsets[x + 1]], values[offsets[y] : offsets[y + 1]], assume_unique=True
            ).shape[0]
        inter = inter.astype(np.float64)
        union = (na + nb).astype(np.float64) - inter
        out[start:stop] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        start = stop
    return out


# --------------------------------------------------------------------------- MinHash


def affine32_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` parameters datasketch's ``MinHash(num_perm, seed)`` draws for its default
    ``affine32`` scheme (same generator, same calls; tests compare them with datasketch's),
    without importing datasketch (and scipy) in every worker."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=U32) * U32(2) + U32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=U32)
    return a, b


class MinHasher:
    """Vectorised MinHash with datasketch's default (affine32) permutations.

    Args:
        num_perm: number of permutations (signature length).
        seed: datasketch's ``seed``; the permutation parameters are datasketch's own
            (see :func:`affine32_permutations`).
        chunk_rows: shingles permuted at once (a cache-sized block of ``chunk_rows x num_perm``).
    """

    def __init__(self, num_perm: int = 128, seed: int = 1, chunk_rows: int = 8192):
        if num_perm < 1:
            raise ValueError("num_perm must be >= 1")
        self.a, self.b = affine32_permutations(num_perm, seed)
        self.num_perm = num_perm
        self.seed = seed
        self.chunk_rows = chunk_rows

    @staticmethod
    def hash32(values: np.ndarray) -> np.ndarray:
        """The 32-bit value each 64-bit shingle hash contributes (datasketch's ``hashfunc`` output)."""
        return (np.asarray(values, U64) >> U64(32)).astype(U32)

    def signatures(self, values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """``(n_docs, num_perm)`` uint32 signatures; a document without shingles gets all 2**32-1.

        Shingles are permuted in blocks of about ``chunk_rows`` (``num_perm x block``, the
        block on the contiguous axis, which numpy vectorises best), then reduced per document
        with ``np.minimum.reduceat``.
        """
        counts = np.diff(offsets)
        ndoc = counts.shape[0]
        sig_t = np.full((self.num_perm, ndoc), MAX_HASH32, dtype=U32)
        nz = np.flatnonzero(counts > 0)
        if nz.size:
            h = fmix32(self.hash32(values))
            a, b = self.a[:, None], self.b[:, None]
            starts = offsets[nz]
            ends = offsets[nz + 1]
            flat = np.empty(self.num_perm * self.chunk_rows, U32)  # reused: no page faults per block
            k = 0
            while k < nz.size:
                s0 = starts[k]
                k1 = max(k + 1, int(np.searchsorted(ends, s0 + self.chunk_rows, side="right")))
                s1 = ends[k1 - 1]
                m = int(s1 - s0)
                if m > self.chunk_rows:
                    flat = np.empty(self.num_perm * m, U32)
                block = flat[: self.num_perm * m].reshape(self.num_perm, m)
                np.multiply(a, h[None, s0:s1], out=block)
                np.add(block, b, out=block)
                sig_t[:, nz[k:k1]] = np.minimum.reduceat(block, starts[k:k1] - s0, axis=1)
                k = k1
        return np.ascontiguousarray(sig_t.T)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """MinHash Jaccard estimate: the share of equal signature entries (row-wise)."""
    return np.mean(np.asarray(sig_a) == np.asarray(sig_b), axis=-1)


# --------------------------------------------------------------------------- LSH


def lsh_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """Bands and rows minimising weighted false positive + false negative probability.

    datasketch's objective (``MinHashLSH(threshold, num_perm, weights)``): over every
    ``b * r <= num_perm``, the integral over ``[0, threshold]`` of the candidate probability
    ``1 - (1 - s**r)**b`` times ``weights[0]`` plus the integral over ``[threshold, 1]`` of
    the miss probability times ``weights[1]``. Integrated here with numpy (composite Simpson,
    2048 intervals per side) for all shapes at once instead of ``scipy.integrate.quad`` per
    shape; tests check the choice equals datasketch's over a grid of thresholds and weights.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    shapes = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)

    def error(sel: np.ndarray, fast: bool) -> np.ndarray:
        b, r = shapes[sel, :1], shapes[sel, 1:]

        def simpson(lo: float, hi: float, miss: bool) -> np.ndarray:
            x = np.linspace(lo, hi, 2049)[None, :]
            w = np.ones(x.shape[1])
            w[1:-1:2], w[2:-1:2] = 4.0, 2.0
            if fast:
                # In place, 32 shapes at a time (cache-sized, no fresh pages), exponents clipped
                # at -700 (no subnormal numbers, which are slow to compute with).
                out = np.empty(b.shape[0])
                with np.errstate(divide="ignore"):
                    lx = np.log(x)
                    for k in range(0, b.shape[0], 32):
                        z = r[k : k + 32] * lx
                        np.exp(np.maximum(z, -700.0, out=z), out=z)
                        np.log(np.subtract(1.0, z, out=z), out=z)
                        np.multiply(z, b[k : k + 32], out=z)
                        np.exp(np.maximum(z, -700.0, out=z), out=z)  # (1 - x**r) ** b
                        if not miss:
                            np.subtract(1.0, z, out=z)
                        out[k : k + 32] = z @ w
                return out * (hi - lo) / (3 * (x.shape[1] - 1))
            y = 1.0 - (1.0 - x**r) ** b
            if miss:
                y = 1.0 - y
            return (y * w).sum(axis=1) * (hi - lo) / (3 * (x.shape[1] - 1))

        return weights[0] * simpson(0.0, threshold, False) + weights[1] * simpson(threshold, 1.0, True)

    # exp(b*log(1-x**r)) is several times faster than pow and within ~1e-13 of it: it finds the
    # few shapes near the minimum, which are then integrated exactly as before (so the choice,
    # ties included, is the one the pow integrals give over every shape).
    approx = error(np.arange(shapes.shape[0]), True)
    margin = 1e-9 * (abs(weights[0]) + abs(weights[1]) + abs(float(approx.min())))
    near = np.flatnonzero(approx <= approx.min() + margin)
    best = int(near[int(np.argmin(error(near, False)))])  # first minimum, in datasketch's (b, r) loop order
    return int(shapes[best, 0]), int(shapes[best, 1])


def candidate_probability(jaccard: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that two documents of the given Jaccard share at least one band."""
    return 1.0 - (1.0 - np.asarray(jaccard, np.float64) ** rows) ** bands


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n_docs, bands)`` uint64 bucket keys; band index is mixed in, so keys of different
    bands never meet in one bucket (up to 64-bit collisions)."""
    n = sig.shape[0]
    if bands * rows > sig.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows > {sig.shape[1]} permutations")
    blk = sig[:, : bands * rows].reshape(n, bands, rows).astype(U64)
    q = np.resize(_Q, rows)
    acc = np.zeros((n, bands), U64)
    for t in range(rows):
        acc += blk[:, :, t] * q[t] + U64(t)
    acc += np.arange(bands, dtype=U64)[None, :] * _SALT_BAND
    return fmix64(acc)


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ordered (min, max), self-pairs dropped, deduplicated and sorted."""
    a = np.asarray(a, U64)
    b = np.asarray(b, U64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    ok = lo != hi
    lo, hi = lo[ok], hi[ok]
    order = np.lexsort((hi, lo))
    lo, hi = lo[order], hi[order]
    keep = np.ones(lo.shape[0], bool)
    if lo.shape[0] > 1:
        keep[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return lo[keep], hi[keep]


def bucket_pairs(
    keys: np.ndarray,
    refs: np.ndarray,
    window: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs of documents that share a bucket key.

    Members of a bucket are ordered by ref and each is paired with the next ``window``
    members (every pair when the bucket has at most ``window + 1`` members), which bounds
    the pairs a huge bucket can produce.

    Args:
        keys: bucket key per entry.
        refs: document reference per entry.
        window: pairs per member in a bucket.
        groups: optional group id per entry (the exact-duplicate hash): within a bucket only
            the first member (lowest ref) of each group takes part, since exact duplicates are
            linked without verification anyway.

    Returns:
        Unique (lo, hi) ref pairs.
    """
    keys = np.asarray(keys, U64)
    refs = np.asarray(refs, U64)
    if keys.shape[0] < 2:
        return np.empty(0, U64), np.empty(0, U64)
    if groups is not None:
        groups = np.asarray(groups, U64)
        order = np.lexsort((refs, groups, keys))
        k, g, r = keys[order], groups[order], refs[order]
        first = np.ones(k.shape[0], bool)
        first[1:] = (k[1:] != k[:-1]) | (g[1:] != g[:-1])
        keys, refs = k[first], r[first]
    order = np.lexsort((refs, keys))
    k, r = keys[order], refs[order]
    los, his = [], []
    for d in range(1, window + 1):
        if d >= k.shape[0]:
            break
        m = k[:-d] == k[d:]
        if not m.any():
            break
        los.append(r[:-d][m])
        his.append(r[d:][m])
    if not los:
        return np.empty(0, U64), np.empty(0, U64)
    return unique_pairs(np.concatenate(los), np.concatenate(his))


def exact_edges(hi: np.ndarray, lo: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star edges (lowest ref -> every other member) of each group of equal 128-bit hashes."""
    hi, lo, refs = np.asarray(hi, U64), np.asarray(lo, U64), np.asarray(refs, U64)
    if refs.shape[0] < 2:
        return np.empty(0, U64), np.empty(0, U64)
    order = np.lexsort((refs, lo, hi))
    h, l, r = hi[order], lo[order], refs[order]
    new = np.ones(r.shape[0], bool)
    new[1:] = (h[1:] != h[:-1]) | (l[1:] != l[:-1])
    head = r[np.maximum.accumulate(np.where(new, np.arange(r.shape[0]), 0))]
    m = ~new
    return head[m], r[m]
