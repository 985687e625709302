"""A sentencepiece ``.model`` (as LLaMA ships) as a base for ``filters.vocab``.

New pieces are appended to the model's protobuf (``sentencepiece_model_pb2.ModelProto``):
every base piece keeps its id, string, score and type. For a BPE model, sentencepiece merges
the adjacent pair whose concatenation is the highest-scoring piece, so new pieces get scores
below every base piece, in the order they were learned (the continuation's merge order);
for a Unigram model they get the scores the continuation estimated (see
:func:`filters.vocab._unigram_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from filters.vocab import META, BaseTokenizer, Learned, VocabError, Word

_NORMAL, _UNKNOWN, _CONTROL, _USER, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_TYPES = {1: "unigram", 2: "bpe"}


class SPTokenizer(BaseTokenizer):
    """A sentencepiece model (BPE or Unigram)."""

    file_name = "tokenizer.model"
    metaspace = True

    def __init__(self, raw: bytes):
        self.raw = raw
        self.proto = pb.ModelProto()
        try:
            self.proto.ParseFromString(raw)
            self.sp = spm.SentencePieceProcessor(model_proto=raw)
        except Exception as e:  # protobuf's DecodeError, sentencepiece's RuntimeError
            raise VocabError(f"not a loadable sentencepiece model: {e}") from None
        kind = self.proto.trainer_spec.model_type
        if kind not in _TYPES:
            raise VocabError(f"sentencepiece model type {kind}: only BPE and Unigram can be extended")
        self.model_type = _TYPES[kind]
        self.pieces = {p.piece: i for i, p in enumerate(self.proto.pieces)}
        self.frozen = {i for i, p in enumerate(self.proto.pieces) if p.type != _NORMAL}
        self._fallback_ids = {i for i, p in enumerate(self.proto.pieces) if p.type in (_UNKNOWN, _BYTE)}
        self.next_id = len(self.proto.pieces)
        self._fallbacks: dict[str, tuple[int, ...]] = {}

    def segment(self, texts: Sequence[str]) -> Iterator[list[Word]]:
        fb = self._fallback_ids
        for st in self.sp.encode(list(texts), return_type="proto"):
            words: list[Word] = []
            cur: list = []
            run: list[int] = []
            for p in st.pieces:
                if p.id in fb:
                    run.append(p.id)
                    if p.surface:  # the last byte of a character, or an <unk> over its text
                        chars = list(p.surface)
                        if len(chars) == 1:
                            self._fallbacks.setdefault(chars[0], tuple(run))
                            cur.append(chars[0])
                        else:
                            for ch in chars:
                                self._fallbacks.setdefault(ch, (p.id,))
                                cur.append(ch)
                        run = []
                    continue
                if run:
                    cur.extend(run)
                    run = []
                if p.piece.startswith(META) and cur:
                    words.append(tuple(cur))
                    cur = []
                if p.id in self.frozen:
                    if cur:
                        words.append(tuple(cur))
                    cur = []
                    continue
                cur.append(p.id)
            cur.extend(run)
            if cur:
                words.append(tuple(cur))
            yield words

    def fallback(self, ch: str) -> tuple[int, ...]:
        if ch not in self._fallbacks:
            ids = self.sp.encode(ch)
            if ids and self.proto.pieces[ids[0]].piece == META:
                ids = ids[1:]
            self._fallbacks[ch] = tuple(ids)
        return self._fallbacks[ch]

    def score(self, i: int) -> float:
        return float(self.proto.pieces[i].score)

    def extend(self, learned: Learned) -> bytes:
        m = pb.ModelProto()
        m.CopyFrom(self.proto)
        low = min((p.score for p in self.proto.pieces if p.type == _NORMAL), default=0.0)
        for k, p in enumerate(learned.pieces):
            if p.id != len(m.pieces):
                raise VocabError(f"internal error: new piece {p.token!r} would get id {len(m.pieces)}, not {p.id}")
            score = low - 1.0 - k if self.model_type == "bpe" else p.score
            m.pieces.append(pb.ModelProto.SentencePiece(piece=p.token, score=score, type=_NORMAL))
        m.trainer_spec.vocab_size = len(m.pieces)
        return m.SerializeToString()

    def encoder(self, raw: bytes) -> Callable[[Sequence[str]], list[list[int]]]:
        sp = spm.SentencePieceProcessor(model_proto=raw)
        return lambda texts: sp.encode(list(texts))

    def vocab_of(self, raw: bytes) -> dict[int, str]:
        sp = spm.SentencePieceProcessor(model_proto=raw)
        return {i: sp.id_to_piece(i) for i in range(sp.get_piece_size())}

    def decoder(self, raw: bytes) -> Callable[[list[int]], str]:
        sp = spm.SentencePieceProcessor(model_proto=raw)
        return lambda ids: sp.decode(ids)
