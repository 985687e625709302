"""Heuristic quality signals: Gopher quality and repetition, C4 and FineWeb line rules.

Pure text logic. :func:`compute_signals` turns one document into a flat dict of numbers (one
per signal, each becomes a column); :func:`failed_rules` compares them with thresholds and
names every rule the document breaks, in a fixed order (repetition first, as in Gopher).

Sources of the rules and of the default thresholds (see ``stages/quality.py``):

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import xxhash

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

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)


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

    def dup_fractions(self, ns: Iterable[int]) -> dict[int, float]:
        """For each ``n``: characters of the words covered by an ``n``-gram seen more than once,
        over all word characters (a word counts once however many such n-grams cover it).
        When no ``n``-gram repeats, no longer one does either."""
        out: dict[int, float] = {}
        none_left = False
        for n in sorted(ns):
            if none_left or self.n < n or self.total_chars == 0:
                out[n] = 0.0
                continue
            _, inverse, counts = np.unique(self.hashes(n), return_inverse=True, return_counts=True)
            dup_starts = np.flatnonzero(counts[inverse] > 1)
            if dup_starts.size == 0:
                out[n] = 0.0
                none_left = True
                continue
            edges = np.zeros(self.n + 1, np.int64)
            np.add.at(edges, dup_starts, 1)
            np.add.at(edges, dup_starts + n, -1)
            covered = np.cumsum(edges[:-1]) > 0
            out[n] = float(self.lens[covered].sum() / self.total_chars)
        return out


def top_ngram_char_fraction(ws: list[str], n: int) -> float:
    """Characters in the most frequent ``n``-gram of ``ws`` (all occurrences) / word characters."""
    return NgramIndex(ws).top_fraction(n)


def dup_ngram_char_fractions(ws: list[str], ns: Iterable[int]) -> dict[int, float]:
    """Share of word characters covered by repeated ``n``-grams, for each ``n`` in ``ns``."""
    return NgramIndex(ws).dup_fractions(ns)


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


def compute_signals(
    text: str,
    stop_words: StopWords | None = None,
    cjk_mode_min_frac: float = 0.5,
    cjk_chars_per_word: float = 2.0,
    short_line_chars: int = 30,
    short_line_chars_cjk: int = 15,
) -> dict[str, float | int | bool | None]:
    """All heuristic signals of one document.

    Args:
        text: the document text.
        stop_words: stop words of the document's language, or None when there is no list
            (then ``gopher_stop_words`` is None and the stop-word rule does not apply).
        cjk_mode_min_frac: share of words that are CJK characters from which the document is
            in CJK mode.
        cjk_chars_per_word: characters that stand for one word in CJK mode: the word count
            counts CJK characters divided by it, and the Gopher n-gram rules look at
            character n-grams this many times longer (a Chinese word has about two
            characters; with single characters a 5-gram is one or two names, and natural
            news text repeats those).
        short_line_chars: FineWeb's short-line length (characters).
        short_line_chars_cjk: the short-line length of CJK-mode documents.

    Returns:
        ``{signal name: value}``; ``gopher_mean_word_len`` is None in CJK mode.
    """
    ws = words(text)
    n_tokens = len(ws)
    n_cjk = len(CJK_CHAR.findall(text))
    cjk = n_tokens > 0 and n_cjk / n_tokens >= cjk_mode_min_frac
    if cjk:
        n_words = round(n_tokens - n_cjk + n_cjk / cjk_chars_per_word)
        scale = cjk_chars_per_word
    else:
        n_words = n_tokens
        scale = 1.0

    raw_lines = _LINE_SPLIT.split(text)
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    n_lines = len(lines)
    paragraphs = _PARAGRAPH_SPLIT.split(text.strip())
    text_chars = len(text)

    s: dict[str, float | int | bool | None] = {"quality_cjk": cjk}
    grams = NgramIndex(ws)
    word_chars = grams.total_chars

    # Gopher repetition (n-gram sizes in tokens; in CJK mode, scaled to characters).
    dl, dl_chars = _duplicates(raw_lines)
    dp, dp_chars = _duplicates(paragraphs)
    s["gopher_dup_lines"] = dl / len(raw_lines) if raw_lines else 0.0
    s["gopher_dup_paras"] = dp / len(paragraphs) if paragraphs else 0.0
    s["gopher_dup_line_chars"] = dl_chars / text_chars if text_chars else 0.0
    s["gopher_dup_para_chars"] = dp_chars / text_chars if text_chars else 0.0
    for n in TOP_NGRAMS:
        s[f"gopher_top_{n}gram"] = grams.top_fraction(math.ceil(n * scale))
    sized = {n: math.ceil(n * scale) for n in DUP_NGRAMS}
    fracs = grams.dup_fractions(set(sized.values()))
    for n in DUP_NGRAMS:
        s[f"gopher_dup_{n}gram"] = fracs[sized[n]]

    # Gopher quality.
    s["gopher_words"] = n_words
    if cjk:
        s["gopher_mean_word_len"] = None
    else:
        s["gopher_mean_word_len"] = word_chars / n_words if n_words else 0.0
    symbols = text.count("#") + text.count("...") + text.count("…")
    s["gopher_symbol_ratio"] = symbols / n_words if n_words else (1.0 if symbols else 0.0)
    s["gopher_bullet_lines"] = sum(ln.startswith(BULLETS) for ln in lines) / n_lines if n_lines else 0.0
    s["gopher_ellipsis_lines"] = sum(ln.endswith(ELLIPSES) for ln in lines) / n_lines if n_lines else 0.0
    has_alpha = _HAS_ALPHA.search
    s["gopher_alpha_words"] = sum(1 for w in ws if w.isalpha() or has_alpha(w)) / n_tokens if n_tokens else 0.0
    s["gopher_stop_words"] = stop_words.count(text) if stop_words is not None else None

    # C4 line rules (fractions of non-empty lines) and the sentences C4 would keep.
    low_lines = [ln.lower() for ln in lines]
    terminal = [ln.endswith(TERMINAL) for ln in lines]
    js = ["javascript" in ln for ln in low_lines]
    policy = [any(m in ln for m in POLICY_MARKERS) for ln in low_lines]
    kept = []
    for ln, t, j, p in zip(lines, terminal, js, policy):
        if not t or j or p:
            continue
        lw = tokens(ln)
        if len(lw) < C4_MIN_WORDS_PER_LINE or max(map(len, lw)) > C4_MAX_WORD_CHARS:
            continue
        kept.append(ln)
    low_text = text.lower()
    s["c4_lorem_ipsum"] = "lorem ipsum" in low_text
    s["c4_curly_brace"] = "{" in text
    s["c4_javascript_lines"] = sum(js) / n_lines if n_lines else 0.0
    s["c4_policy_lines"] = sum(policy) / n_lines if n_lines else 0.0
    s["c4_no_punct_lines"] = (n_lines - sum(terminal)) / n_lines if n_lines else 0.0
    s["c4_sentences"] = sum(len(_SENTENCE_END.findall(ln)) for ln in kept)

    # FineWeb.
    short = short_line_chars_cjk if cjk else short_line_chars
    s["fineweb_line_punct"] = sum(terminal) / n_lines if n_lines else 0.0
    s["fineweb_short_lines"] = sum(len(ln) <= short for ln in lines) / n_lines if n_lines else 0.0
    _, fl_chars = _duplicates(lines)
    nonnl_chars = text_chars - text.count("\n")
    s["fineweb_dup_line_chars"] = fl_chars / nonnl_chars if nonnl_chars else 0.0
    s["fineweb_newlines"] = text.count("\n") / n_words if n_words else 0.0
    return s


@dataclass(frozen=True)
class Rule:
    """A threshold rule: the document fails when ``signal <op> threshold``.

    ``op`` is ``"<"`` (minimum), ``">"`` (maximum), ``"true"`` (reject when the boolean
    signal is true and the threshold is true) or ``"outside"`` (threshold is ``(lo, hi)``).
    """

    name: str
    signal: str
    op: str


# Order matters: the first failed rule is a rejected document's reason. Rule names say the
# direction of the threshold (min_/max_); the reason code is ``quality.<rule name>``.
RULES: tuple[Rule, ...] = (
    Rule("gopher_max_dup_lines", "gopher_dup_lines", ">"),
    Rule("gopher_max_dup_paras", "gopher_dup_paras", ">"),
    Rule("gopher_max_dup_line_chars", "gopher_dup_line_chars", ">"),
    Rule("gopher_max_dup_para_chars", "gopher_dup_para_chars", ">"),
    *(Rule(f"gopher_max_top_{n}gram", f"gopher_top_{n}gram", ">") for n in TOP_NGRAMS),
    *(Rule(f"gopher_max_dup_{n}gram", f"gopher_dup_{n}gram", ">") for n in DUP_NGRAMS),
    Rule("gopher_min_words", "gopher_words", "<"),
    Rule("gopher_max_words", "gopher_words", ">"),
    Rule("gopher_mean_word_len", "gopher_mean_word_len", "outside"),
    Rule("gopher_max_symbol_ratio", "gopher_symbol_ratio", ">"),
    Rule("gopher_max_bullet_lines", "gopher_bullet_lines", ">"),
    Rule("gopher_max_ellipsis_lines", "gopher_ellipsis_lines", ">"),
    Rule("gopher_min_alpha_words", "gopher_alpha_words", "<"),
    Rule("gopher_min_stop_words", "gopher_stop_words", "<"),
    Rule("c4_lorem_ipsum", "c4_lorem_ipsum", "true"),
    Rule("c4_curly_brace", "c4_curly_brace", "true"),
    Rule("c4_max_javascript_lines", "c4_javascript_lines", ">"),
    Rule("c4_max_policy_lines", "c4_policy_lines", ">"),
    Rule("c4_max_no_punct_lines", "c4_no_punct_lines", ">"),
    Rule("c4_min_sentences", "c4_sentences", "<"),
    Rule("fineweb_min_line_punct", "fineweb_line_punct", "<"),
    Rule("fineweb_max_short_lines", "fineweb_short_lines", ">"),
    Rule("fineweb_max_dup_line_chars", "fineweb_dup_line_chars", ">"),
    Rule("fineweb_max_newlines", "fineweb_newlines", ">"),
)
RULE_NAMES = tuple(r.name for r in RULES)


def failed_rules(signals: Mapping[str, object], thresholds: Mapping[str, object]) -> list[str]:
    """Names of the rules ``signals`` break, in :data:`RULES` order.

    ``thresholds`` maps rule name -> threshold; a rule whose threshold is missing or None is
    off, and a signal that is None (not applicable) passes.
    """
    failed = []
    for rule in RULES:
        thr = thresholds.get(rule.name)
        if thr is None or thr is False:
            continue
        v = signals.get(rule.signal)
        if v is None:
            continue
        if rule.op == "<":
            bad = v < thr  # type: ignore[operator]
        elif rule.op == ">":
            bad = v > thr  # type: ignore[operator]
        elif rule.op == "true":
            bad = bool(v)
        else:
            lo, hi = thr  # type: ignore[misc]
            bad = v < lo or v > hi  # type: ignore[operator]
        if bad:
            failed.append(rule.name)
    return failed
