"""Token n-gram containment of held-out documents in a training stream (train/val overlap).

A held-out document overlaps training when at least ``threshold`` of its distinct token
n-grams occur anywhere in the training tokens. The held-out side is kept in memory (it is
small); the training side is streamed in chunks, so memory does not grow with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """64-bit polynomial hash of every length-``n`` window of ``tokens`` (empty when shorter)."""
    m = len(tokens) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    t = tokens.astype(np.uint64) + np.uint64(1)
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):
        h = h * _MULT + t[j : j + m]
    return h


def split_docs(tokens: np.ndarray, eos: int) -> list[np.ndarray]:
    """Documents of a packed stream (each ends with ``eos``), without their EOS."""
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else np.zeros(0, dtype=np.int64)
    docs = [tokens[a:b] for a, b in zip(starts, ends)]
    if len(ends) == 0 and len(tokens):
        docs = [tokens]
    elif len(ends) and ends[-1] + 1 < len(tokens):
        docs.append(tokens[ends[-1] + 1 :])
    return docs


@dataclass
class Containment:
    """Per held-out document: distinct n-grams and how many of them occur in training."""

    names: list[str]
    grams: np.ndarray
    found: np.ndarray
    too_short: int

    @property
    def share(self) -> np.ndarray:
        return self.found / np.maximum(self.grams, 1)


def containment(held_out: dict[str, np.ndarray], train_chunks, n: int) -> Containment:
    """Containment of each held-out document (name -> tokens) in the training chunks.

    Args:
        held_out: document name -> token array (documents shorter than ``n`` are counted, not checked).
        train_chunks: iterable of token arrays; consecutive chunks must overlap by ``n - 1``
            tokens so that no window is lost (see :func:`chunks`).
        n: n-gram length in tokens.
    """
    names, per_doc, short = [], [], 0
    for name, toks in held_out.items():
        h = np.unique(ngram_hashes(toks, n))
        if len(h) == 0:
            short += 1
            continue
        names.append(name)
        per_doc.append(h)
    if not per_doc:
        return Containment([], np.zeros(0), np.zeros(0), short)
    allh = np.concatenate(per_doc)
    owner = np.repeat(np.arange(len(per_doc)), [len(h) for h in per_doc])
    hit = np.zeros(len(allh), dtype=bool)
    for chunk in train_chunks:
        hit |= np.isin(allh, ngram_hashes(chunk, n))
    grams = np.bincount(owner, minlength=len(per_doc))
    found = np.bincount(owner, weights=hit, minlength=len(per_doc))
    return Containment(names, grams, found, short)


def chunks(read, total: int, n: int, size: int = 1 << 22):
    """Chunks of a stream of ``total`` tokens (``read(start, count)``), overlapping by ``n - 1``."""
    start = 0
    while start < total:
        count = min(size, total - start)
        yield read(start, count)
        if start + count >= total:
            break
        start += count - (n - 1)
