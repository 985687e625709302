"""Decontamination: n-gram overlap of training examples with evaluation prompts.

Text is normalised before comparison so that reformatted, re-cased or re-punctuated copies
match: Unicode NFKC, case folding, then tokens are runs of letters and digits (punctuation,
markup and whitespace only separate tokens), and each Han/Hiragana/Katakana character is a token
of its own (those scripts have no spaces).

Two rules, as in GPT-3's contamination analysis and its short-prompt caveat:

* **n-gram rule** (default ``n = 13``): an example is contaminated when any ``n`` consecutive
  tokens of one of its turns equal ``n`` consecutive tokens of an evaluation text. Prefixes,
  suffixes, reformatting ("Question: ...", Markdown, different line breaks) do not hide a copy.
* **short rule**: an evaluation text with fewer than ``n`` tokens (but at least
  ``min_tokens``) has no ``n``-gram; it matches a turn that contains all of its tokens
  contiguously and of which it makes up at least ``short_min_coverage`` of the tokens (a short
  prompt with a prefix or a few words around it matches; the same few words inside a long,
  unrelated text do not). Evaluation texts shorter than ``min_tokens`` are too generic to match
  anything and are counted in :attr:`Decontaminator.too_short`.

Evaluation sets are JSONL files read by :func:`load_eval_texts`: MT-Bench style (``question_id``
and ``turns``), self-instruct style (``id``, ``instruction``, ``instances`` with ``input``), or
any records with an id field and a text field. Every text keeps the id of its evaluation item,
reported as ``<set name>:<id>``; when several items match, the lowest in (set order, file order)
is reported.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import xxhash

from curate.errors import ConfigError

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def tokens(text: str) -> list[str]:
    """Normalised tokens of ``text`` (see the module docstring)."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def _gram(toks: list[str], i: int, n: int) -> int:
    return xxhash.xxh3_64_intdigest("\x1f".join(toks[i : i + n]).encode("utf-8"))


@dataclass(frozen=True)
class EvalText:
    """One evaluation text and the id reported when it matches."""

    eval_id: str
    text: str


def load_eval_texts(path: str | Path, name: str | None = None, id_field: str | None = None,
                    text_fields: Iterable[str] | None = None) -> list[EvalText]:
    """Evaluation texts of a JSONL file (see the module docstring).

    Args:
        path: the JSONL file.
        name: the set name used in reported ids (default: the file stem).
        id_field: the id field (default: ``question_id``, ``id``, else the line number).
        text_fields: fields holding prompt text (strings or lists of strings) for files in
            neither known layout.
    """
    path = Path(path)
    name = name or path.stem
    out: list[EvalText] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"decontamination set {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise ConfigError(f"decontamination set {path}: line {n} is not valid JSON") from None
        if not isinstance(rec, dict):
            raise ConfigError(f"decontamination set {path}: line {n} is not an object")
        key = id_field or next((k for k in ("question_id", "id") if k in rec), None)
        rid = f"{name}:{rec[key] if key else n}"
        texts: list[str] = []
        if text_fields:
            for f in text_fields:
                v = rec.get(f)
                texts.extend([v] if isinstance(v, str) else [x for x in v or [] if isinstance(x, str)])
        elif isinstance(rec.get("turns"), list):
            texts = [t for t in rec["turns"] if isinstance(t, str)]
        elif isinstance(rec.get("instruction"), str):
            inputs = [i.get("input") for i in rec.get("instances") or [] if isinstance(i, dict)]
            inputs = [x for x in inputs if isinstance(x, str) and x.strip()]
            texts = [rec["instruction"]] + [f"{rec['instruction']}\n{x}" for x in inputs]
        else:
            raise ConfigError(f"decontamination set {path}: line {n} has no 'turns' or 'instruction'; set text_fields")
        out.extend(EvalText(rid, t) for t in texts if t.strip())
    return out


class Decontaminator:
    """Matches texts against evaluation texts with the n-gram and short rules.

    Args:
        evals: the evaluation texts, in priority order for reporting.
        n: n-gram length in normalised tokens.
        min_tokens: evaluation texts with fewer tokens are ignored.
        short_min_coverage: the share of a turn's tokens a short evaluation text must cover.
    """

    def __init__(self, evals: Iterable[EvalText], n: int = 13, min_tokens: int = 5, short_min_coverage: float = 0.5):
        if n < 1 or min_tokens < 1:
            raise ValueError("n and min_tokens must be >= 1")
        self.n = n
        self.min_tokens = min_tokens
        self.short_min_coverage = short_min_coverage
        self.grams: dict[int, int] = {}  # n-gram hash -> rank of the first eval text holding it
        self.short: list[tuple[tuple[str, ...], int]] = []  # (tokens, rank)
        self.ids: list[str] = []
        self.too_short = 0
        for rank, ev in enumerate(evals):
            self.ids.append(ev.eval_id)
            toks = tokens(ev.text)
            if len(toks) >= n:
                for i in range(len(toks) - n + 1):
                    self.grams.setdefault(_gram(toks, i, n), rank)
            elif len(toks) >= min_tokens:
                self.short.append((tuple(toks), rank))
            else:
                self.too_short += 1
        # Short texts indexed by their first token: a turn is scanned once per candidate start.
        self._short_by_first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for toks, rank in self.short:
            self._short_by_first.setdefault(toks[0], []).append((toks, rank))

    def match_tokens(self, toks: list[str]) -> int | None:
        """Rank of the best-matching evaluation text for one turn's tokens, or None."""
        best = None
        n = self.n
        grams = self.grams
        for i in range(len(toks) - n + 1):
            r = grams.get(_gram(toks, i, n))
            if r is not None and (best is None or r < best):
                best = r
        if self._short_by_first and toks:
            limit = len(toks) * self.short_min_coverage
            for i, t in enumerate(toks):
                for cand, r in self._short_by_first.get(t, ()):
                    if len(cand) >= limit and tuple(toks[i : i + len(cand)]) == cand and (best is None or r < best):
                        best = r
        return best

    def match(self, texts: Iterable[str]) -> str | None:
        """The eval id matched by any of ``texts`` (e.g. an example's turns), or None."""
        best = None
        for t in texts:
            if not t:
                continue
            r = self.match_tokens(tokens(t))
            if r is not None and (best is None or r < best):
                best = r
        return None if best is None else self.ids[best]
