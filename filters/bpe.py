"""Byte-level BPE tokenizer (HF ``tokenizers``): train on an iterator of texts, or load a file.

The tokenizer is identified by the SHA-256 of its ``tokenizer.json`` serialisation, which the
mix stage records in every mixture's ``meta.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

DEFAULT_EOS = "<|endoftext|>"


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    eos_token: str = DEFAULT_EOS,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style pre-tokenisation, all 256 bytes in the alphabet).

    Args:
        texts: training documents (an iterator is consumed once; memory is bounded by the
            trainer's pair counts, not by the number of texts).
        vocab_size: target vocabulary size including the 256 byte symbols and ``eos_token``.
        eos_token: the end-of-document special token (id 0).
        min_frequency: pairs seen fewer times are not merged.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eos_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer_json(tok: Tokenizer) -> str:
    """The canonical ``tokenizer.json`` text of ``tok``."""
    return tok.to_str(pretty=False)


def tokenizer_hash(blob: str | bytes) -> str:
    """SHA-256 of a ``tokenizer.json`` serialisation."""
    if isinstance(blob, str):
        blob = blob.encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def load_tokenizer(blob: str) -> Tokenizer:
    """A tokenizer from the text of a ``tokenizer.json``."""
    return Tokenizer.from_str(blob)


def eos_id(tok: Tokenizer, eos_token: str) -> int:
    """The id of ``eos_token``; ValueError when the vocabulary lacks it."""
    i = tok.token_to_id(eos_token)
    if i is None:
        raise ValueError(f"tokenizer has no token {eos_token!r} to use as end-of-document")
    return i


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab < 65536), else uint32."""
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


def encode_docs(tok: Tokenizer, texts: list[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``texts`` without special tokens; return (flat token ids, per-text lengths)."""
    if not texts:
        return np.empty(0, dtype), np.empty(0, np.int64)
    encs = tok.encode_batch_fast(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
    flat = np.concatenate([np.asarray(e.ids, dtype=dtype) for e in encs])
    return flat, lengths
