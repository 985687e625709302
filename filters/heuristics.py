"""Heuristic quality signals and the built-in rules: Gopher quality and repetition, C4 and FineWeb.

Pure text logic. :class:`Doc` is one document with the analyses several rules share (words,
lines, paragraphs, the n-gram index, C4's line flags), each computed once on first use; the
rules below are registered with :func:`filters.rules.builtin` and each writes its signal
column(s) and decides on them (see :mod:`filters.rules` for the protocol). Their order is
the decision order: the first rule a document breaks is its reason (repetition first, as in
Gopher).

Sources of the rules and of the default thresholds:

* Gopher (Rae et al. 2021, appendix A): word count, mean word length, symbol-to-word ratio,
  bullet and ellipsis line fractions, alphabetic-word fraction, stop words; repetition of
  lines and paragraphs, the most frequent 2-4-gram, duplicated 5-10-grams.
* C4 (Raffel et al. 2020): lines without terminal punctuation, with "javascript", with
  policy/cookie notices, with fewer than 3 words are dropped; pages with "lorem ipsum" or a
  curly brace are dropped, and pages with fewer than 5 sentences left. Here the page is not
  rewritten: the line rules give fractions and the sentences that would survive.
* FineWeb (Penedo et al. 2024): share of lines ending in punctuation, share of short lines,
  share of characters in duplicated lines, newlines per word.

Chinese and Japanese are written without spaces. Words are therefore tokens of a regex that
makes every Han/kana character a token of its own and keeps whitespace-separated words
elsewhere; a document whose words are mostly such characters is in *CJK mode*, where the
word-based rules switch to character-based equivalents: the word count is the CJK characters
divided by ``cjk_chars_per_word`` (plus other words), the Gopher n-gram rules use character
n-grams that many times longer, stop words are single characters, the short-line length is
its own setting, and the mean-word-length rule does not apply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
import xxhash

from filters.rules import ThresholdRule, builtin

# Han (with extensions and compatibility ideographs), kana, bopomofo and the iteration marks.
CJK_CLASS = (
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3031-\u3035\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
CJK_CHAR = re.compile(f"[{CJK_CLASS}]")
# A token: one CJK character, or a run of anything but whitespace and CJK characters.
_TOKEN = re.compile(f"[{CJK_CLASS}]|[^\\s{CJK_CLASS}]+")
_HAS_ALNUM = re.compile(r"[^\W_]")
_HAS_ALPHA = re.compile(r"[^\W\d_]")
_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
_LINE_SPLIT = re.compile(r"\n+")

BULLETS = ("-", "*", "•", "‣", "⁃", "◦", "▪", "▫", "●", "○", "■", "□", "►", "▶", "➢", "→", "·", "–", "—")
ELLIPSES = ("...", "…")
# Line endings that count as terminal punctuation (C4 used . ? ! and a closing quote).
TERMINAL = (".", "!", "?", '"', "'", "”", "’", "…", "。", "！", "？", "」", "』", "．", "｡")
# A sentence end: Latin marks before a space, quote, bracket or the line end; CJK full stops
# anywhere (no space follows them).
_SENTENCE_END = re.compile(r"[.!?…．]+(?=[\s\"'”’」』)\]]|$)|[。！？｡]+")
POLICY_MARKERS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
    "隐私政策",
    "使用条款",
    "隱私權政策",
    "プライバシーポリシー",
    "利用規約",
    "クッキー",
)
C4_MIN_WORDS_PER_LINE = 3
C4_MAX_WORD_CHARS = 1000


def tokens(text: str) -> list[str]:
    """Whitespace words, except that each Han/kana character is a token of its own."""
    return _TOKEN.findall(text)


def words(text: str) -> list[str]:
    """Tokens with at least one letter or digit (pure punctuation/symbol tokens are not words)."""
    has = _HAS_ALNUM.search
    return [t for t in _TOKEN.findall(text) if t.isalnum() or has(t)]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items equal to an earlier one, their characters)."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


class NgramIndex:
    """Word n-grams of one document as 64-bit hashes (numpy), for the Gopher n-gram rules.

    A word's hash is its xxh64; an n-gram's is a polynomial in its words' hashes (uint64,
    wrapping). Two different n-grams of one document share a hash with probability about
    ``N**2 / 2**64``, which is ignored. Everything is deterministic across processes.
    """

    _MUL = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, ws: list[str]):
        n = len(ws)
        self.n = n
        self.lens = np.fromiter(map(len, ws), dtype=np.int64, count=n)
        self.cum = np.concatenate((np.zeros(1, np.int64), np.cumsum(self.lens)))
        self.total_chars = int(self.cum[-1])
        self._h = {1: np.fromiter(map(xxhash.xxh64_intdigest, map(str.encode, ws)), dtype=np.uint64, count=n)}
        self._dup: dict[int, float] = {}
        self._no_repeat_from = math.inf

    def hashes(self, n: int) -> np.ndarray:
        """Hash of the n-gram starting at each position (length ``N - n + 1``)."""
        k = max(j for j in self._h if j <= n)
        h = self._h[k]
        h1 = self._h[1]
        while k < n:
            h = h[:-1] * self._MUL + h1[k:]
            k += 1
            self._h[k] = h
        return h

    def top_fraction(self, n: int) -> float:
        """Characters in (all occurrences of) the most frequent ``n``-gram / all word characters.

        Among equally frequent n-grams the longest (in characters) counts.
        """
        if self.n < n or self.total_chars == 0:
            return 0.0
        h = self.hashes(n)
        _, first, counts = np.unique(h, return_index=True, return_counts=True)
        top = counts.max()
        if top < 2:
            return 0.0
        starts = first[counts == top]
        chars = (self.cum[starts + n] - self.cum[starts]).max()
        return float(top * chars / self.total_chars)

    def dup_fraction(self, n: int) -> float:
        """Characters of the words covered by an ``n``-gram seen more than once, over all word
        characters (a word counts once however many such n-grams cover it).

        When no ``m``-gram repeats, no longer one does either: once a size without repeats
        has been seen, longer sizes are 0 without hashing.
        """
        if n in self._dup:
            return self._dup[n]
        if self.n < n or self.total_chars == 0 or n > self._no_repeat_from:
            out = 0.0
        else:
            _, inverse, counts = np.unique(self.hashes(n), return_inverse=True, return_counts=True)
            dup_starts = np.flatnonzero(counts[inverse] > 1)
            if dup_starts.size == 0:
                out = 0.0
                self._no_repeat_from = min(self._no_repeat_from, n)
            else:
                edges = np.zeros(self.n + 1, np.int64)
                np.add.at(edges, dup_starts, 1)
                np.add.at(edges, dup_starts + n, -1)
                covered = np.cumsum(edges[:-1]) > 0
                out = float(self.lens[covered].sum() / self.total_chars)
        self._dup[n] = out
        return out


@dataclass(frozen=True)
class StopWords:
    """Stop words of one language: whole words, or single characters for CJK languages."""

    words: frozenset[str]
    as_chars: bool
    _pattern: re.Pattern | None

    @classmethod
    def of(cls, items: Iterable[str]) -> StopWords:
        items = frozenset(w.lower() for w in items if w)
        as_chars = bool(items) and all(len(w) == 1 and CJK_CHAR.match(w) for w in items)
        pattern = None
        if not as_chars and items:
            alt = "|".join(re.escape(w) for w in sorted(items, key=len, reverse=True))
            pattern = re.compile(rf"(?<![^\W_])(?:{alt})(?![^\W_])")
        return cls(items, as_chars, pattern)

    def count(self, text: str) -> int:
        """Occurrences of the stop words in ``text`` (case-insensitive)."""
        if self.as_chars:
            return sum(text.count(c) for c in self.words)
        assert self._pattern is not None
        return len(self._pattern.findall(text.lower()))


class _once:  # noqa: N801 (used as a decorator)
    """A per-instance cached attribute: computed on first access, then a plain attribute.

    Like :class:`functools.cached_property` without its lock (Python 3.11 takes one on every
    first access, which costs the quality stage a few per cent over the ~15 shared analyses
    of each document).
    """

    def __init__(self, func):
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


class Doc:
    """One document as the quality rules see it: its text and language, and the analyses that
    several rules share (words, lines, paragraphs, the n-gram index, C4's line flags), each
    computed once, on first use.

    Args:
        text: the document text.
        lang: its language code, or None.
        cjk_mode_min_frac: share of words that are CJK characters from which the document is
            in CJK mode.
        cjk_chars_per_word: characters that stand for one word in CJK mode: the word count
            counts CJK characters divided by it, and the Gopher n-gram rules look at
            character n-grams this many times longer (a Chinese word has about two
            characters; with single characters a 5-gram is one or two names, and natural
            news text repeats those).
    """

    def __init__(self, text: str, lang: str | None = None, cjk_mode_min_frac: float = 0.5,
                 cjk_chars_per_word: float = 2.0):
        self.text = text
        self.lang = lang
        self.cjk_mode_min_frac = cjk_mode_min_frac
        self.cjk_chars_per_word = cjk_chars_per_word

    @_once
    def words(self) -> list[str]:
        return words(self.text)

    @_once
    def n_cjk(self) -> int:
        return len(CJK_CHAR.findall(self.text))

    @_once
    def cjk(self) -> bool:
        """Whether the document is judged in CJK mode."""
        n_tokens = len(self.words)
        return n_tokens > 0 and self.n_cjk / n_tokens >= self.cjk_mode_min_frac

    @_once
    def n_words(self) -> int:
        """Word count; in CJK mode CJK characters count ``1 / cjk_chars_per_word`` each."""
        if self.cjk:
            return round(len(self.words) - self.n_cjk + self.n_cjk / self.cjk_chars_per_word)
        return len(self.words)

    @_once
    def scale(self) -> float:
        """Length factor of the Gopher n-gram sizes (``cjk_chars_per_word`` in CJK mode)."""
        return self.cjk_chars_per_word if self.cjk else 1.0

    @_once
    def grams(self) -> NgramIndex:
        return NgramIndex(self.words)

    def top_ngram(self, n: int) -> float:
        """Gopher's top ``n``-gram character share (n scaled in CJK mode)."""
        return self.grams.top_fraction(math.ceil(n * self.scale))

    def dup_ngram(self, n: int) -> float:
        """Gopher's duplicated ``n``-gram character share (n scaled in CJK mode)."""
        return self.grams.dup_fraction(math.ceil(n * self.scale))

    @_once
    def raw_lines(self) -> list[str]:
        """The text split at runs of newlines (Gopher's lines)."""
        return _LINE_SPLIT.split(self.text)

    @_once
    def paragraphs(self) -> list[str]:
        return _PARAGRAPH_SPLIT.split(self.text.strip())

    @_once
    def dup_raw_lines(self) -> tuple[int, int]:
        """(lines equal to an earlier line, their characters)."""
        return _duplicates(self.raw_lines)

    @_once
    def dup_paragraphs(self) -> tuple[int, int]:
        return _duplicates(self.paragraphs)

    @_once
    def lines(self) -> list[str]:
        """Non-empty lines, stripped (C4's and FineWeb's lines)."""
        return [ln for ln in (ln.strip() for ln in self.text.split("\n")) if ln]

    @_once
    def terminal(self) -> list[bool]:
        """Per line: ends with terminal punctuation."""
        return [ln.endswith(TERMINAL) for ln in self.lines]

    @_once
    def low_lines(self) -> list[str]:
        return [ln.lower() for ln in self.lines]

    @_once
    def javascript(self) -> list[bool]:
        """Per line: mentions "javascript" (C4)."""
        return ["javascript" in ln for ln in self.low_lines]

    @_once
    def policy(self) -> list[bool]:
        """Per line: a cookie / terms / privacy notice (C4)."""
        return [any(m in ln for m in POLICY_MARKERS) for ln in self.low_lines]

    def line_share(self, flags: Iterable[bool]) -> float:
        """Share of :attr:`lines` with a true flag (0.0 without lines)."""
        return sum(flags) / len(self.lines) if self.lines else 0.0


F32, I32, BOOL = pa.float32(), pa.int32(), pa.bool_()


# --- Gopher repetition (Rae et al. 2021, table A1). The first rule a document breaks is its
# reason, so these come first, as in Gopher.
@builtin
class GopherMaxDupLines(ThresholdRule):
    code = "gopher_max_dup_lines"
    meaning = "share of lines equal to an earlier line above gopher_max_dup_lines (Gopher)"
    params = {code: (float | None, 0.30)}
    signals = {"gopher_dup_lines": F32}

    def score(self, d: Doc) -> dict:
        return {"gopher_dup_lines": d.dup_raw_lines[0] / len(d.raw_lines) if d.raw_lines else 0.0}


@builtin
class GopherMaxDupParas(ThresholdRule):
    code = "gopher_max_dup_paras"
    meaning = "share of paragraphs equal to an earlier one above gopher_max_dup_paras (Gopher)"
    params = {code: (float | None, 0.30)}
    signals = {"gopher_dup_paras": F32}

    def score(self, d: Doc) -> dict:
        return {"gopher_dup_paras": d.dup_paragraphs[0] / len(d.paragraphs) if d.paragraphs else 0.0}


@builtin
class GopherMaxDupLineChars(ThresholdRule):
    code = "gopher_max_dup_line_chars"
    meaning = "share of characters in duplicated lines above gopher_max_dup_line_chars (Gopher)"
    params = {code: (float | None, 0.20)}
    signals = {"gopher_dup_line_chars": F32}

    def score(self, d: Doc) -> dict:
        return {"gopher_dup_line_chars": d.dup_raw_lines[1] / len(d.text) if d.text else 0.0}


@builtin
class GopherMaxDupParaChars(ThresholdRule):
    code = "gopher_max_dup_para_chars"
    meaning = "share of characters in duplicated paragraphs above gopher_max_dup_para_chars (Gopher)"
    params = {code: (float | None, 0.20)}
    signals = {"gopher_dup_para_chars": F32}

    def score(self, d: Doc) -> dict:
        return {"gopher_dup_para_chars": d.dup_paragraphs[1] / len(d.text) if d.text else 0.0}


class _TopNgram(ThresholdRule):
    n: ClassVar[int]

    def score(self, d: Doc) -> dict:
        return {self.signal: d.top_ngram(self.n)}


class _DupNgram(ThresholdRule):
    n: ClassVar[int]

    def score(self, d: Doc) -> dict:
        return {self.signal: d.dup_ngram(self.n)}


# Gopher's n-gram thresholds: the most frequent 2-4-gram, and duplicated 5-10-grams.
TOP_NGRAMS = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_NGRAMS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
for _n, _t in TOP_NGRAMS.items():
    builtin(type(f"GopherMaxTop{_n}gram", (_TopNgram,), {
        "__module__": __name__, "n": _n, "code": f"gopher_max_top_{_n}gram",
        "meaning": f"characters in the most frequent word {_n}-gram above gopher_max_top_{_n}gram "
                   "of all word characters (Gopher)",
        "params": {f"gopher_max_top_{_n}gram": (float | None, _t)},
        "signals": {f"gopher_top_{_n}gram": F32},
    }))
for _n, _t in DUP_NGRAMS.items():
    builtin(type(f"GopherMaxDup{_n}gram", (_DupNgram,), {
        "__module__": __name__, "n": _n, "code": f"gopher_max_dup_{_n}gram",
        "meaning": f"characters covered by repeated word {_n}-grams above gopher_max_dup_{_n}gram "
                   "of all word characters (Gopher)",
        "params": {f"gopher_max_dup_{_n}gram": (float | None, _t)},
        "signals": {f"gopher_dup_{_n}gram": F32},
    }))
del _n, _t


# --- Gopher quality.
@builtin
class GopherMinWords(ThresholdRule):
    code = "gopher_min_words"
    meaning = "fewer words than gopher_min_words (Gopher; CJK characters estimate words)"
    params = {code: (int | None, 50)}
    signals = {"gopher_words": I32}
    op = "<"

    def score(self, d: Doc) -> dict:
        return {"gopher_words": d.n_words}


@builtin
class GopherMaxWords(ThresholdRule):
    code = "gopher_max_words"
    meaning = "more words than gopher_max_words (Gopher)"
    params = {code: (int | None, 100_000)}
    signal = "gopher_words"


@builtin
class GopherMeanWordLen(ThresholdRule):
    code = "gopher_mean_word_len"
    meaning = "mean word length outside the gopher_mean_word_len range (Gopher; not in CJK mode)"
    params = {code: (tuple[float, float] | None, (3.0, 10.0))}
    signals = {"gopher_mean_word_len": F32}
    op = "outside"

    def score(self, d: Doc) -> dict:
        if d.cjk:
            return {"gopher_mean_word_len": None}
        return {"gopher_mean_word_len": d.grams.total_chars / d.n_words if d.n_words else 0.0}


@builtin
class GopherMaxSymbolRatio(ThresholdRule):
    code = "gopher_max_symbol_ratio"
    meaning = "'#' and ellipses per word above gopher_max_symbol_ratio (Gopher)"
    params = {code: (float | None, 0.10)}
    signals = {"gopher_symbol_ratio": F32}

    def score(self, d: Doc) -> dict:
        t = d.text
        symbols = t.count("#") + t.count("...") + t.count("…")
        return {"gopher_symbol_ratio": symbols / d.n_words if d.n_words else (1.0 if symbols else 0.0)}


@builtin
class GopherMaxBulletLines(ThresholdRule):
    code = "gopher_max_bullet_lines"
    meaning = "share of lines starting with a bullet above gopher_max_bullet_lines (Gopher)"
    params = {code: (float | None, 0.90)}
    signals = {"gopher_bullet_lines": F32}

    def score(self, d: Doc) -> dict:
        return {"gopher_bullet_lines": d.line_share(ln.startswith(BULLETS) for ln in d.lines)}


@builtin
class GopherMaxEllipsisLines(ThresholdRule):
    code = "gopher_max_ellipsis_lines"
    meaning = "share of lines ending with an ellipsis above gopher_max_ellipsis_lines (Gopher)"
    params = {code: (float | None, 0.30)}
    signals = {"gopher_ellipsis_lines": F32}

    def score(self, d: Doc) -> dict:
        return {"gopher_ellipsis_lines": d.line_share(ln.endswith(ELLIPSES) for ln in d.lines)}


@builtin
class GopherMinAlphaWords(ThresholdRule):
    code = "gopher_min_alpha_words"
    meaning = "share of words with a letter below gopher_min_alpha_words (Gopher)"
    params = {code: (float | None, 0.80)}
    signals = {"gopher_alpha_words": F32}
    op = "<"

    def score(self, d: Doc) -> dict:
        ws, has_alpha = d.words, _HAS_ALPHA.search
        return {"gopher_alpha_words": sum(1 for w in ws if w.isalpha() or has_alpha(w)) / len(ws) if ws else 0.0}


# Gopher's English stop words; one-character function words for Chinese and Japanese.
DEFAULT_STOP_WORDS: dict[str, list[str]] = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "zh": ["的", "是", "在", "了", "和", "有", "不", "这"],
    "ja": ["の", "に", "は", "を", "た", "が", "で", "て"],
}


@builtin
class GopherMinStopWords(ThresholdRule):
    """``stop_words`` maps a language code to its stop words (single characters for CJK
    languages); a document in a language without a list has no stop-word signal."""

    code = "gopher_min_stop_words"
    meaning = "fewer stop-word occurrences than gopher_min_stop_words (Gopher; languages with a list)"
    params = {code: (int | None, 2), "stop_words": (dict[str, list[str]], DEFAULT_STOP_WORDS)}
    signals = {"gopher_stop_words": I32}
    op = "<"

    def __init__(self, config):
        super().__init__(config)
        self.lists = {lang: StopWords.of(ws) for lang, ws in config.stop_words.items()}

    def score(self, d: Doc) -> dict:
        sw = self.lists.get(d.lang or "")
        return {"gopher_stop_words": sw.count(d.text) if sw is not None else None}


# --- C4 (Raffel et al. 2020). The page is not rewritten: C4's line removals are reported as
# line shares (doc-level limits, off by default) and the sentences that would be left.
@builtin
class C4LoremIpsum(ThresholdRule):
    code = "c4_lorem_ipsum"
    meaning = "the page contains 'lorem ipsum' (C4)"
    params = {code: (bool, True)}
    signals = {"c4_lorem_ipsum": BOOL}
    op = "true"

    def score(self, d: Doc) -> dict:
        return {"c4_lorem_ipsum": "lorem ipsum" in d.text.lower()}


@builtin
class C4CurlyBrace(ThresholdRule):
    code = "c4_curly_brace"
    meaning = "the page contains a curly brace '{' (C4)"
    params = {code: (bool, True)}
    signals = {"c4_curly_brace": BOOL}
    op = "true"

    def score(self, d: Doc) -> dict:
        return {"c4_curly_brace": "{" in d.text}


@builtin
class C4MaxJavascriptLines(ThresholdRule):
    code = "c4_max_javascript_lines"
    meaning = "share of lines mentioning javascript above c4_max_javascript_lines (C4 drops such lines)"
    params = {code: (float | None, None)}
    signals = {"c4_javascript_lines": F32}

    def score(self, d: Doc) -> dict:
        return {"c4_javascript_lines": d.line_share(d.javascript)}


@builtin
class C4MaxPolicyLines(ThresholdRule):
    code = "c4_max_policy_lines"
    meaning = "share of cookie/terms/privacy lines above c4_max_policy_lines (C4 drops such lines)"
    params = {code: (float | None, None)}
    signals = {"c4_policy_lines": F32}

    def score(self, d: Doc) -> dict:
        return {"c4_policy_lines": d.line_share(d.policy)}


@builtin
class C4MaxNoPunctLines(ThresholdRule):
    code = "c4_max_no_punct_lines"
    meaning = "share of lines without terminal punctuation above c4_max_no_punct_lines (C4 drops such lines)"
    params = {code: (float | None, None)}
    signals = {"c4_no_punct_lines": F32}

    def score(self, d: Doc) -> dict:
        return {"c4_no_punct_lines": d.line_share(not t for t in d.terminal)}


@builtin
class C4MinSentences(ThresholdRule):
    code = "c4_min_sentences"
    meaning = "fewer sentences than c4_min_sentences left after C4's line removal (C4)"
    params = {code: (int | None, 5)}
    signals = {"c4_sentences": I32}
    op = "<"

    def score(self, d: Doc) -> dict:
        n = 0
        for ln, t, j, p in zip(d.lines, d.terminal, d.javascript, d.policy):
            if not t or j or p:
                continue
            lw = tokens(ln)
            if len(lw) < C4_MIN_WORDS_PER_LINE or max(map(len, lw)) > C4_MAX_WORD_CHARS:
                continue
            n += len(_SENTENCE_END.findall(ln))
        return {"c4_sentences": n}


# --- FineWeb (Penedo et al. 2024).
@builtin
class FinewebMinLinePunct(ThresholdRule):
    code = "fineweb_min_line_punct"
    meaning = "share of lines ending in terminal punctuation below fineweb_min_line_punct (FineWeb)"
    params = {code: (float | None, 0.12)}
    signals = {"fineweb_line_punct": F32}
    op = "<"

    def score(self, d: Doc) -> dict:
        return {"fineweb_line_punct": d.line_share(d.terminal)}


@builtin
class FinewebMaxShortLines(ThresholdRule):
    """Short lines have at most ``short_line_chars`` characters (``short_line_chars_cjk`` in
    CJK mode)."""

    code = "fineweb_max_short_lines"
    meaning = "share of short lines above fineweb_max_short_lines (FineWeb)"
    params = {code: (float | None, 0.67), "short_line_chars": (int, 30), "short_line_chars_cjk": (int, 15)}
    signals = {"fineweb_short_lines": F32}

    def score(self, d: Doc) -> dict:
        short = self.config.short_line_chars_cjk if d.cjk else self.config.short_line_chars
        return {"fineweb_short_lines": d.line_share(len(ln) <= short for ln in d.lines)}


@builtin
class FinewebMaxDupLineChars(ThresholdRule):
    code = "fineweb_max_dup_line_chars"
    meaning = "share of characters in duplicated lines above fineweb_max_dup_line_chars (FineWeb)"
    params = {code: (float | None, 0.01)}
    signals = {"fineweb_dup_line_chars": F32}

    def score(self, d: Doc) -> dict:
        _, chars = _duplicates(d.lines)
        nonnl = len(d.text) - d.text.count("\n")
        return {"fineweb_dup_line_chars": chars / nonnl if nonnl else 0.0}


@builtin
class FinewebMaxNewlines(ThresholdRule):
    code = "fineweb_max_newlines"
    meaning = "newlines per word above fineweb_max_newlines (FineWeb)"
    params = {code: (float | None, 0.30)}
    signals = {"fineweb_newlines": F32}

    def score(self, d: Doc) -> dict:
        return {"fineweb_newlines": d.text.count("\n") / d.n_words if d.n_words else 0.0}
