"""A HF ``tokenizer.json`` as a base for :mod:`filters.vocab`: BPE (byte-level, or
sentencepiece-style with ``▁`` and byte fallback) and Unigram.

Writing the extension: BPE appends vocabulary entries and merges after the base merges (an
added token outside the model vocabulary is pinned in it, so that loading the file cannot
give it a new id that collides with a new piece); Unigram appends ``[piece, score]`` rows,
padding ids that added tokens hold past the list.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

from tokenizers import Tokenizer

from filters.vocab import BYTE_TOKEN, META, BaseTokenizer, Learned, Sym, VocabError, Word


def _walk(node) -> Iterator[dict]:
    """Every component dict of a normalizer / pre-tokenizer / decoder tree."""
    if isinstance(node, dict):
        yield node
        for key in ("normalizers", "pretokenizers", "decoders", "processors"):
            for child in node.get(key) or []:
                yield from _walk(child)


class HFTokenizer(BaseTokenizer):
    """A HF ``tokenizer.json``: BPE (byte-level or sentencepiece-style) or Unigram."""

    file_name = "tokenizer.json"

    def __init__(self, raw: bytes | str):
        self.raw = raw.encode("utf-8") if isinstance(raw, str) else raw
        try:
            self.spec = json.loads(self.raw)
            self.tok = Tokenizer.from_str(self.raw.decode("utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise VocabError(f"not a loadable tokenizer.json: {e}") from None
        model = self.spec.get("model") or {}
        self.model_type = str(model.get("type", "")).lower()
        if self.model_type not in ("bpe", "unigram"):
            raise VocabError(f"tokenizer.json model type {model.get('type')!r}: only BPE and Unigram can be extended")
        if self.model_type == "bpe" and (model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")):
            raise VocabError("BPE with continuing_subword_prefix / end_of_word_suffix is not supported")
        parts = [*_walk(self.spec.get("normalizer")), *_walk(self.spec.get("pre_tokenizer"))]
        types = {p.get("type") for p in parts}
        replaces_space = any(p.get("type") == "Replace" and p.get("content") == META for p in parts)
        self.metaspace = "Metaspace" in types or replaces_space
        if not self.metaspace and "ByteLevel" not in types:
            raise VocabError("tokenizer.json is neither byte-level nor sentencepiece-style (Metaspace)")
        if self.model_type == "bpe":
            self.pieces = dict(model["vocab"])
            self._scores: dict[int, float] = {}
        else:
            self.pieces = {p: i for i, (p, _) in enumerate(model["vocab"])}
            self._scores = {i: float(s) for i, (_, s) in enumerate(model["vocab"])}
        added = self.spec.get("added_tokens") or []
        for a in added:
            self.pieces.setdefault(a["content"], a["id"])
        self.frozen = {a["id"] for a in added}
        unk = model.get("unk_token") if self.model_type == "bpe" else model.get("unk_id")
        self.unk_id = self.pieces.get(unk) if isinstance(unk, str) else unk
        if self.unk_id is not None:
            self.frozen.add(self.unk_id)
        if model.get("byte_fallback"):
            self.frozen |= {i for p, i in self.pieces.items() if BYTE_TOKEN.match(p)}
        self.next_id = max([*self.pieces.values(), *(a["id"] for a in added)], default=-1) + 1
        self._starts_word = {i for p, i in self.pieces.items() if p.startswith(META)} if self.metaspace else set()
        self._fallback_ids = {i for i in self.frozen if i == self.unk_id or BYTE_TOKEN.match(self._string(i) or "")}
        self._special = self.frozen - self._fallback_ids
        self._byte_of = {i: int(BYTE_TOKEN.match(self._string(i)).group(1), 16)
                         for i in self._fallback_ids if i != self.unk_id}
        self.tok.encode_special_tokens = True
        self._fallbacks: dict[str, tuple[int, ...]] = {}

    def _string(self, i: int) -> str | None:
        return self.tok.id_to_token(i)

    def segment(self, texts: Sequence[str]) -> Iterator[list[Word]]:
        encs = self.tok.encode_batch(list(texts), add_special_tokens=False)
        byte_of, special, starts = self._byte_of, self._special, self._starts_word
        for text, e in zip(texts, encs):
            ids, wids, offs = e.ids, e.word_ids, e.offsets
            words: list[Word] = []
            cur: list[Sym] = []
            last = None
            i, n = 0, len(ids)
            while i < n:
                t, w = ids[i], wids[i]
                if t in special or w is None:
                    if cur:
                        words.append(tuple(cur))
                    cur, last, i = [], None, i + 1
                    continue
                if cur and (w != last or t in starts):
                    words.append(tuple(cur))
                    cur = []
                last = w
                if t in byte_of:  # a run of byte-fallback tokens: the characters they spell
                    j = i + 1
                    while j < n and ids[j] in byte_of:
                        j += 1
                    cur.extend(utf8_chars(ids[i:j], byte_of, self._fallbacks))
                    i = j
                    continue
                if t == self.unk_id:  # <unk>, possibly fused over several characters
                    span = text[offs[i][0] : offs[i][1]]
                    for ch in span:
                        self._fallbacks.setdefault(ch, (t,))
                    cur.extend(span if span else (t,))
                    i += 1
                    continue
                cur.append(t)
                i += 1
            if cur:
                words.append(tuple(cur))
            yield words

    def fallback(self, ch: str) -> tuple[int, ...]:
        if ch not in self._fallbacks:
            self._fallbacks[ch] = tuple(t.id for t in self.tok.model.tokenize(ch))
        return self._fallbacks[ch]

    def score(self, i: int) -> float:
        return self._scores.get(i, 0.0)

    def extend(self, learned: Learned) -> bytes:
        spec = json.loads(self.raw)
        model = spec["model"]
        if self.model_type == "bpe":
            vocab = model["vocab"]
            # An added token outside the model vocabulary would be given a fresh id (the model's
            # size) when the file is loaded, colliding with a new piece: pin it in the model too.
            for a in spec.get("added_tokens") or []:
                vocab.setdefault(a["content"], a["id"])
            for p in learned.pieces:
                vocab[p.token] = p.id
            as_str = bool(model["merges"]) and isinstance(model["merges"][0], str)
            for a, b in learned.merges:
                if as_str and (" " in a or " " in b):
                    raise VocabError(f"merge ({a!r}, {b!r}) holds a space; cannot write it as 'a b'")
                model["merges"].append(f"{a} {b}" if as_str else [a, b])
        else:
            vocab = model["vocab"]
            by_id = {a["id"]: a["content"] for a in spec.get("added_tokens") or []}
            for p in learned.pieces:
                while len(vocab) < p.id:  # ids held by added tokens beyond the model vocabulary
                    vocab.append([by_id.get(len(vocab), f"<unused_{len(vocab)}>"), 0.0])
                vocab.append([p.token, p.score])
        blob = json.dumps(spec, ensure_ascii=False, indent=2).encode("utf-8")
        check = HFTokenizer(blob)
        for p in learned.pieces:
            if check.pieces.get(p.token) != p.id:
                raise VocabError(f"internal error: new piece {p.token!r} did not get id {p.id}")
        return blob

    def encoder(self, raw: bytes) -> Callable[[Sequence[str]], list[list[int]]]:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
        tok.encode_special_tokens = True
        return lambda texts: [e.ids for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def vocab_of(self, raw: bytes) -> dict[int, str]:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
        return {i: s for s, i in tok.get_vocab(with_added_tokens=True).items()}

    def decoder(self, raw: bytes) -> Callable[[list[int]], str]:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
        return lambda ids: tok.decode(ids, skip_special_tokens=False)


def utf8_chars(ids: Sequence[int], byte_of: dict[int, int], fallbacks: dict[str, tuple[int, ...]]) -> list[Sym]:
    """A run of byte-fallback ids as symbols: each complete UTF-8 character as a ``str`` (its
    ids recorded in ``fallbacks``), any other byte as its id."""
    out: list[Sym] = []
    i, n = 0, len(ids)
    while i < n:
        b0 = byte_of[ids[i]]
        size = 2 if 0xC2 <= b0 <= 0xDF else 3 if 0xE0 <= b0 <= 0xEF else 4 if 0xF0 <= b0 <= 0xF4 else 1
        chunk = ids[i : i + size]
        try:
            ch = bytes(byte_of[t] for t in chunk).decode("utf-8") if len(chunk) == size else ""
        except UnicodeDecodeError:
            ch = ""
        if len(ch) == 1:
            fallbacks.setdefault(ch, tuple(chunk))
            out.append(ch)
            i += size
        else:
            out.append(ids[i])
            i += 1
    return out
