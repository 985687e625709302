"""Vocabulary extension: continue a base tokenizer's BPE on domain text, append the new pieces.

The pieces are learned as a *continuation* of BPE training on text as the base tokenizer
already splits it:

1. The domain text is segmented by the base tokenizer into words (its pre-tokenizer's words;
   for sentencepiece-style vocabularies a word starts at each ``▁``) of base token ids, and
   equal words are counted once with their frequency.
2. Characters the base vocabulary lacks (byte-fallback or ``<unk>`` in the base) become new
   one-character pieces when they occur at least ``min_frequency`` times; rarer ones keep the
   base's fallback ids.
3. Greedy BPE over those sequences: the most frequent adjacent pair is merged into a new
   piece, pair counts are updated where it occurred, and so on until ``max_new`` pieces exist
   or no pair occurs ``min_frequency`` times. A pair whose concatenation is already a base
   token is never merged (it would change how the base splits text it already covers), nor a
   pair involving a special, unknown or byte-fallback token, nor (sentencepiece style) a pair
   whose right side starts a word.

The merges are appended after the base merges, so BPE applies every base merge first and the
new ones only to what is left: text in which no new merge fires tokenises exactly as before.
A new piece's ``init_from`` is the base ids it is made of, i.e. how the base tokenizer splits
its text; the trainer initialises its embedding rows as the mean of those base rows.

Base formats: a HF ``tokenizer.json`` (``filters.vocab_hf``: byte-level BPE, sentencepiece-
style BPE with byte fallback, Unigram) and a sentencepiece ``.model`` (``filters.vocab_spm``).
Everything here is pure: functions get texts and bytes and return bytes and dicts.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

META = "\u2581"  # sentencepiece's word-start mark
ID_MAP_FORMAT = "curate-vocab/1"
BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")

Sym = int | str  # a base token id, or a character the base vocabulary lacks
Word = tuple[Sym, ...]


class VocabError(ValueError):
    """A base tokenizer this module cannot extend, or an inconsistent extension."""


@lru_cache(maxsize=1)
def byte_chars() -> dict[int, str]:
    """GPT-2's byte-level alphabet: byte value -> the printable character standing for it.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, ...)
    map, in byte order, to code points from 256 upwards.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    out = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return out


@lru_cache(maxsize=1)
def _char_bytes() -> dict[str, int]:
    return {c: b for b, c in byte_chars().items()}


# ----------------------------------------------------------------------------- base tokenizers


class BaseTokenizer(ABC):
    """What the continuation needs from a base tokenizer, whatever its file format.

    Attributes:
        raw: the base file's bytes (its SHA-256 goes into ``id_map.json``).
        file_name: the extended file's name in the output directory.
        model_type: ``bpe`` or ``unigram``.
        metaspace: sentencepiece-style (``▁`` starts a word) rather than byte-level.
        pieces: model string -> id of every base token (special tokens included).
        frozen: ids never merged (special, control, unknown and byte-fallback tokens).
        next_id: the first id after every id the base uses (added tokens included).
    """

    raw: bytes
    file_name: str
    model_type: str
    metaspace: bool
    pieces: dict[str, int]
    frozen: set[int]
    next_id: int

    @abstractmethod
    def segment(self, texts: Sequence[str]) -> Iterator[list[Word]]:
        """Per text, its words as the base splits them (unknown characters as ``str``)."""

    @abstractmethod
    def fallback(self, ch: str) -> tuple[int, ...]:
        """The base ids of a character the base vocabulary lacks (bytes or ``<unk>``)."""

    @abstractmethod
    def score(self, i: int) -> float:
        """A Unigram piece's log-probability score (0.0 for BPE)."""

    @abstractmethod
    def extend(self, learned: Learned) -> bytes:
        """The extended tokenizer file: base unchanged, ``learned`` pieces appended."""

    @abstractmethod
    def encoder(self, raw: bytes) -> Callable[[Sequence[str]], list[list[int]]]:
        """A batch encoder for a file of this format (the base's or an extended one)."""

    @abstractmethod
    def vocab_of(self, raw: bytes) -> dict[int, str]:
        """id -> model string of every token of a file of this format."""

    @abstractmethod
    def decoder(self, raw: bytes) -> Callable[[list[int]], str]:
        """A decoder (ids -> text) for a file of this format."""

    def text_of(self, piece: str) -> bytes:
        """The bytes a model string stands for (for reports and filters)."""
        if self.metaspace:
            m = BYTE_TOKEN.match(piece)
            if m:
                return bytes([int(m.group(1), 16)])
            return piece.replace(META, " ").encode("utf-8")
        cb = _char_bytes()
        return bytes(cb[c] for c in piece if c in cb)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def load_base(raw: bytes, name: str = "") -> BaseTokenizer:
    """A base tokenizer from file bytes: a sentencepiece ``.model`` when ``name`` ends so or
    the bytes are not JSON, else a HF ``tokenizer.json``."""
    if name.endswith(".model") or not raw.lstrip()[:1] == b"{":
        from filters.vocab_spm import SPTokenizer

        return SPTokenizer(raw)
    from filters.vocab_hf import HFTokenizer

    return HFTokenizer(raw)


# ----------------------------------------------------------------------------- continuation


@dataclass(frozen=True)
class NewPiece:
    """One appended token.

    Attributes:
        id: its id (after every base id).
        token: its model string (byte-level characters, or ``▁``-text).
        kind: ``char`` (a character the base lacked) or ``merge``.
        count: how often it was formed in the training words when it was added.
        init_from: the base ids it is made of (how the base tokenizer splits it).
        score: Unigram score (log-probability scale of the base); 0.0 for BPE.
    """

    id: int
    token: str
    kind: str
    count: int
    init_from: tuple[int, ...]
    score: float = 0.0


@dataclass
class Learned:
    """The continuation's result: new pieces in id order and merges in rank order."""

    pieces: list[NewPiece] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)
    training_words: int = 0
    training_symbols_before: int = 0
    training_symbols_after: int = 0


def count_words(base: BaseTokenizer, texts: Iterable[str], batch: int = 256) -> Counter[Word]:
    """Frequencies of the base-tokenised words of ``texts`` (a word of one symbol is skipped:
    no pair can form in it)."""
    counts: Counter[Word] = Counter()
    buf: list[str] = []

    def flush():
        for words in base.segment(buf):
            counts.update(w for w in words if len(w) > 1 or (len(w) == 1 and isinstance(w[0], str)))
        buf.clear()

    for t in texts:
        if t:
            buf.append(t)
            if len(buf) >= batch:
                flush()
    if buf:
        flush()
    return counts


def _non_ascii(b: bytes) -> bool:
    return any(x >= 0x80 for x in b)


PIECE_FILTERS: dict[str, Callable[[bytes], bool]] = {"any": lambda b: True, "non_ascii": _non_ascii}


def learn(
    base: BaseTokenizer,
    words: Counter[Word],
    max_new: int,
    min_frequency: int = 2,
    piece_filter: str = "any",
    protect: Counter[Word] | None = None,
    protect_ratio: float = 0.01,
    progress: Callable[[int], None] | None = None,
) -> Learned:
    """Continue BPE training on base-tokenised ``words``; see the module docstring.

    Args:
        base: the base tokenizer.
        words: base-tokenised word -> frequency (from :func:`count_words`).
        max_new: at most this many new pieces (characters + merges).
        min_frequency: a character or pair seen fewer times is not added.
        piece_filter: ``any``, or ``non_ascii`` (a new piece must hold a non-ASCII byte, so
            pieces learned on, e.g., Chinese text never fire on plain English).
        protect: base-tokenised words of general text that should keep its tokenisation: a
            character or pair whose rate per symbol there is at least ``protect_ratio`` times its
            rate in the domain words is never added (so that, e.g., ``“`` learned on Chinese
            text does not change English text that uses it too).
        protect_ratio: see ``protect``.
        progress: called with the number of pieces added so far, now and then.
    """
    keep = PIECE_FILTERS[piece_filter]
    out = Learned()
    strings: dict[int, str] = {}
    init: dict[int, tuple[int, ...]] = {}
    by_string: dict[str, int] = {}
    next_id = base.next_id

    chars: Counter[str] = Counter()
    for w, c in words.items():
        for s in w:
            if isinstance(s, str):
                chars[s] += c
    guard = _Guard(base, words, protect, protect_ratio)
    char_id: dict[str, int] = {}
    for ch in sorted(chars, key=lambda x: (-chars[x], x)):
        if len(out.pieces) >= max_new or chars[ch] < min_frequency:
            break
        piece = ch
        if piece in base.pieces or not keep(piece.encode("utf-8")) or guard.char_banned(ch, chars[ch]):
            continue
        char_id[ch] = next_id
        strings[next_id], init[next_id], by_string[piece] = piece, base.fallback(ch), next_id
        out.pieces.append(NewPiece(next_id, piece, "char", chars[ch], init[next_id]))
        next_id += 1

    seqs: list[list[int]] = []
    freqs: list[int] = []
    merged: Counter[tuple[int, ...]] = Counter()
    for w, c in words.items():
        seq: list[int] = []
        for s in w:
            if isinstance(s, str):
                seq.extend((char_id[s],) if s in char_id else base.fallback(s))
            else:
                seq.append(s)
        merged[tuple(seq)] += c
    for seq, c in merged.items():
        seqs.append(list(seq))
        freqs.append(c)
    out.training_words = sum(freqs)
    out.training_symbols_before = sum(len(s) * f for s, f in zip(seqs, freqs))

    base_str: dict[int, str] = {i: s for s, i in base.pieces.items()}

    def s_of(i: int) -> str:
        return strings[i] if i in strings else base_str[i]

    pair_count: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}
    for wi, seq in enumerate(seqs):
        f = freqs[wi]
        for p in zip(seq, seq[1:]):
            pair_count[p] = pair_count.get(p, 0) + f
            st = where.get(p)
            if st is None:
                where[p] = {wi}
            else:
                st.add(wi)
    heap = [(-c, a, b) for (a, b), c in pair_count.items()]
    heapq.heapify(heap)
    frozen = base.frozen
    starts = {i for s, i in base.pieces.items() if s.startswith(META)} if base.metaspace else set()
    banned: set[tuple[int, int]] = set()

    def allowed(a: int, b: int, cur: int) -> str | None:
        if a in frozen or b in frozen or b in starts:
            return None
        s = s_of(a) + s_of(b)
        if s in base.pieces or not keep(base.text_of(s)) or guard.pair_banned(a, b, cur):
            return None
        return s

    while heap and len(out.pieces) < max_new:
        neg, a, b = heapq.heappop(heap)
        cur = pair_count.get((a, b), 0)
        if cur != -neg:
            if cur > 0:
                heapq.heappush(heap, (-cur, a, b))
            continue
        if cur < min_frequency:
            break
        if (a, b) in banned:
            continue
        piece = allowed(a, b, cur)
        if piece is None:
            banned.add((a, b))
            continue
        c_id = by_string.get(piece)
        if c_id is None:
            c_id = next_id
            next_id += 1
            strings[c_id] = piece
            init[c_id] = init.get(a, (a,)) + init.get(b, (b,))
            by_string[piece] = c_id
            out.pieces.append(NewPiece(c_id, piece, "merge", cur, init[c_id]))
        out.merges.append((s_of(a), s_of(b)))
        touched: set[tuple[int, int]] = set()
        for wi in where.pop((a, b), ()):
            seq = seqs[wi]
            n = len(seq)
            i = 0
            new: list[int] = []
            hit = False
            while i < n:
                if i + 1 < n and seq[i] == a and seq[i + 1] == b:
                    new.append(c_id)
                    i += 2
                    hit = True
                else:
                    new.append(seq[i])
                    i += 1
            if not hit:
                continue
            f = freqs[wi]
            for p in zip(seq, seq[1:]):
                pair_count[p] -= f
            for p in zip(new, new[1:]):
                pair_count[p] = pair_count.get(p, 0) + f
                if c_id in p:
                    touched.add(p)
                    st = where.get(p)
                    if st is None:
                        where[p] = {wi}
                    else:
                        st.add(wi)
            seqs[wi] = new
        pair_count.pop((a, b), None)
        for p in touched:
            if pair_count.get(p, 0) > 0:
                heapq.heappush(heap, (-pair_count[p], p[0], p[1]))
        if progress is not None and len(out.pieces) % 500 == 0:
            progress(len(out.pieces))

    out.training_symbols_after = sum(len(s) * f for s, f in zip(seqs, freqs))
    if base.model_type == "unigram":
        out.pieces = _unigram_scores(base, out.pieces, seqs, freqs)
    return out


class _Guard:
    """Rates of characters and base-id pairs in protected (general) text vs the domain words."""

    def __init__(self, base: BaseTokenizer, words: Counter[Word], protect: Counter[Word] | None, ratio: float):
        self.on = bool(protect)
        if not self.on:
            return
        self.ratio = ratio
        self.pairs: Counter[tuple[int, int]] = Counter()
        self.chars: Counter[str] = Counter()
        total = 0
        for w, c in protect.items():
            seq: list[int] = []
            for s in w:
                if isinstance(s, str):
                    self.chars[s] += c
                    seq.extend(base.fallback(s))
                else:
                    seq.append(s)
            total += len(seq) * c
            for p in zip(seq, seq[1:]):
                self.pairs[p] += c
        self.protect_total = max(total, 1)
        self.domain_total = max(sum(len(w) * c for w, c in words.items()), 1)

    def _banned(self, general: int, domain: int) -> bool:
        return general / self.protect_total >= self.ratio * domain / self.domain_total

    def char_banned(self, ch: str, domain: int) -> bool:
        return self.on and self.chars.get(ch, 0) > 0 and self._banned(self.chars[ch], domain)

    def pair_banned(self, a: int, b: int, domain: int) -> bool:
        return self.on and self.pairs.get((a, b), 0) > 0 and self._banned(self.pairs[(a, b)], domain)


def _unigram_scores(base: BaseTokenizer, pieces: list[NewPiece], seqs, freqs) -> list[NewPiece]:
    """Scores for new Unigram pieces: the log relative frequency of the piece in the final
    segmentation of the training words, raised where needed above the summed score of its
    base split so that Viterbi prefers the piece wherever its text occurs."""
    import math

    use: Counter[int] = Counter()
    for s, f in zip(seqs, freqs):
        for t in s:
            use[t] += f
    total = max(sum(use.values()), 1)
    out = []
    for p in pieces:
        est = math.log(max(use[p.id], 1) / total)
        floor = sum(base.score(i) for i in p.init_from) + 1e-3
        out.append(NewPiece(p.id, p.token, p.kind, p.count, p.init_from, max(est, floor)))
    return out


# ----------------------------------------------------------------------------- outputs


def id_map(base: BaseTokenizer, extended: bytes, learned: Learned) -> dict:
    """The ``id_map.json`` body of the vocab output contract."""
    vocab = base.vocab_of(extended)
    return {
        "format": ID_MAP_FORMAT,
        "base_tokenizer_sha256": base.sha256,
        "tokenizer_sha256": hashlib.sha256(extended).hexdigest(),
        "tokenizer_file": base.file_name,
        "base_vocab_size": base.next_id,
        "vocab_size": max(vocab) + 1,
        "old_to_new": "identity on every base id",
        "init": "each new row (input and output embeddings) = mean of the base rows in init_from",
        "new_tokens": [{"id": p.id, "token": p.token, "init_from": list(p.init_from)} for p in learned.pieces],
    }


def check_extension(base: BaseTokenizer, extended: bytes, learned: Learned) -> None:
    """Every base id keeps its string and decodes to the same text; new ids are the learned
    pieces, appended. VocabError otherwise."""
    old, new = base.vocab_of(base.raw), base.vocab_of(extended)
    for i, s in old.items():
        if new.get(i) != s:
            raise VocabError(f"base id {i} ({s!r}) became {new.get(i)!r} in the extended tokenizer")
    added = {i: s for i, s in new.items() if i not in old}
    want = {p.id: p.token for p in learned.pieces}
    placeholders = {i for i in added if i not in want and i < base.next_id}
    if {i: s for i, s in added.items() if i not in placeholders} != want:
        raise VocabError("the extended tokenizer's new ids are not exactly the learned pieces")
    dec_old, dec_new = base.decoder(base.raw), base.decoder(extended)
    for i in old:
        if dec_old([i]) != dec_new([i]):
            raise VocabError(f"base id {i} decodes differently after the extension")


def piece_text(base: BaseTokenizer, token: str) -> str:
    """A readable form of a model string (partial UTF-8 shown with U+FFFD)."""
    return base.text_of(token).decode("utf-8", errors="replace")


def compression_counts(
    base: BaseTokenizer, extended: bytes, domain: Sequence[str], general: Sequence[str], batch: int = 256
) -> dict:
    """Raw before/after sums over held-out documents (summable across shards).

    Returns ``{"domain": {docs, chars, tokens_before, tokens_after, docs_changed}, "general":
    {...}, "use": [[new id, uses on the domain side], ...]}``.
    """
    enc_b, enc_e = base.encoder(base.raw), base.encoder(extended)
    use: Counter[int] = Counter()
    out: dict = {}
    for side, texts in (("domain", domain), ("general", general)):
        tb = te = changed = 0
        for k in range(0, len(texts), batch):
            chunk = list(texts[k : k + batch])
            for x, y in zip(enc_b(chunk), enc_e(chunk)):
                tb += len(x)
                te += len(y)
                changed += x != y
                if side == "domain":
                    use.update(t for t in y if t >= base.next_id)
        out[side] = {"docs": len(texts), "chars": sum(len(t) for t in texts), "tokens_before": tb,
                     "tokens_after": te, "docs_changed": changed}
    out["use"] = sorted([i, c] for i, c in use.items())
    return out


def summarize(base: BaseTokenizer, extended: bytes, parts: Iterable[dict], top: int = 30) -> dict:
    """The report figures from :func:`compression_counts` results (one per shard).

    Per side: documents, characters, tokens before and after, characters per token and
    tokens per document before and after, ``token_ratio`` (before / after), ``token_change``
    ((after - before) / before) and the share of documents whose token sequence changed at
    all; ``top_pieces``: the new pieces used most on the held-out domain text.
    """
    keys = ("docs", "chars", "tokens_before", "tokens_after", "docs_changed")
    tot = {side: dict.fromkeys(keys, 0) for side in ("domain", "general")}
    use: Counter[int] = Counter()
    for part in parts:
        for side in tot:
            for k in keys:
                tot[side][k] += part[side][k]
        use.update({i: c for i, c in part["use"]})
    out: dict = {}
    for side, r in tot.items():
        n, chars, tb, te = r["docs"], r["chars"], r["tokens_before"], r["tokens_after"]
        out[side] = dict(
            r,
            chars_per_token_before=round(chars / tb, 4) if tb else None,
            chars_per_token_after=round(chars / te, 4) if te else None,
            tokens_per_doc_before=round(tb / n, 2) if n else None,
            tokens_per_doc_after=round(te / n, 2) if n else None,
            token_ratio=round(tb / te, 4) if te else None,
            token_change=round((te - tb) / tb, 6) if tb else None,
            docs_changed_share=round(r["docs_changed"] / n, 6) if n else None,
        )
    vocab = base.vocab_of(extended)
    out["top_pieces"] = [
        {"id": i, "token": vocab[i], "text": piece_text(base, vocab[i]), "count": c}
        for i, c in sorted(use.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    ]
    return out


def compression(
    base: BaseTokenizer, extended: bytes, domain: Sequence[str], general: Sequence[str], top: int = 30
) -> dict:
    """:func:`summarize` of one :func:`compression_counts` over all the given documents."""
    return summarize(base, extended, [compression_counts(base, extended, domain, general)], top)


def report_table(report: dict) -> str:
    """The report as a Markdown table (plus the most used new pieces)."""
    rows = [
        "| text | docs | chars | tokens before | tokens after | chars/token before | chars/token after "
        "| tokens/doc before | tokens/doc after | before/after | docs changed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side in ("domain", "general"):
        r = report[side]
        share = "n/a" if r["docs_changed_share"] is None else f"{100 * r['docs_changed_share']:.2f}%"
        rows.append(
            f"| {side} | {r['docs']} | {r['chars']} | {r['tokens_before']} | {r['tokens_after']} "
            f"| {r['chars_per_token_before']} | {r['chars_per_token_after']} | {r['tokens_per_doc_before']} "
            f"| {r['tokens_per_doc_after']} | {r['token_ratio']} | {share} |"
        )
    top = ", ".join(f"`{p['text']}` {p['count']}" for p in report.get("top_pieces", [])[:15])
    rows.append("")
    rows.append(f"Pieces added: {report.get('pieces_added')}; most used on held-out domain text: {top}")
    return "\n".join(rows)
