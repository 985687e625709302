"""KenLM perplexity: CCNet-style normalisation, a tokeniser that works for CJK, a scorer.

The same two functions prepare the text that ``lmplz`` trains on (stage ``train-lm``) and
the text the model scores (stage ``perplexity``), so the vocabularies agree:

* :func:`normalize` follows CCNet's ``text_normalizer.normalize``: lowercase, strip accents
  (Latin/Greek/Cyrillic combining diacritics only: the kana voicing marks and the vowel
  signs of Indic scripts are letters, not accents), fold compatibility forms and unicode
  punctuation to ASCII (fullwidth ``，`` -> ``,``, ``。`` -> ``.``, curly quotes -> straight),
  every decimal digit to ``0`` and drop control and format characters.
* :func:`tokenize` splits a normalised line into space-separated tokens: each Han/kana
  character is a token (Chinese and Japanese have no spaces, so 5-grams are character
  5-grams there), runs of other letters and digits are tokens, each punctuation mark is a
  token, and a run of one repeated mark (``-----``, ``...``) is a single mark.

A document's perplexity is CCNet's: the log10 probabilities of its lines (each scored as a
sentence with ``<s>``/``</s>``) are summed and divided by the number of tokens plus one
``</s>`` per line, ``ppl = 10 ** (-sum / n)``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping

from filters.heuristics import CJK_CLASS

_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_DIGIT = re.compile(r"\d")
# Combining diacritics (accents) of the Latin, Greek and Cyrillic scripts.
_ACCENTS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
# Punctuation that NFKD leaves alone, folded to its ASCII counterpart.
_PUNCT = {
    "。": ".", "、": ",", "〃": '"', "「": '"', "」": '"', "『": '"', "』": '"',
    "〈": "<", "〉": ">", "《": '"', "》": '"', "【": "[", "】": "]", "〔": "(", "〕": ")",
    "〖": "[", "〗": "]", "〘": "[", "〙": "]", "〚": "[", "〛": "]", "〜": "~", "〝": '"', "〞": '"',
    "〟": '"', "・": "-", "‐": "-", "‒": "-", "–": "-", "—": "-", "―": "-",
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"', "′": "'",
    "‹": '"', "›": '"', "«": '"', "»": '"', "•": "-", "·": "-", "¿": "?", "¡": "!",
}
_FOLD = re.compile("[" + "".join(re.escape(k) for k in _PUNCT) + "]")
# A punctuation mark repeated (rules of dashes, rows of dots, "!!!"): one mark.
_REPEATED_PUNCT = re.compile(r"([^\w\s])\1+")


def _fold(m: re.Match) -> str:
    return _PUNCT[m.group()]


def _char_class(cps: list[int]) -> str:
    """A regex character class body for the code points ``cps`` (sorted), as ranges."""
    parts = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = chr(cps[i]), chr(cps[j])
        parts.append(re.escape(lo) if i == j else f"{re.escape(lo)}-{re.escape(hi)}")
        i = j + 1
    return "".join(parts)


@functools.cache
def _patterns() -> tuple[re.Pattern, re.Pattern]:
    """(control/format characters to drop, token regex), built once per process from one
    pass over the Basic Multilingual Plane.

    Control/format characters are the plane's Cc and Cf plus the tag characters;
    punctuation is its P* and S* characters plus the emoji blocks: a regex class with many
    ranges above U+FFFF makes Python's ``re`` several times slower.
    """
    drop, punct = [], []
    for cp in range(0x10000):
        cat = unicodedata.category(chr(cp))
        if cat in ("Cc", "Cf") and cp not in (0x09, 0x0A):
            drop.append(cp)
        elif cat[0] in "PS":
            punct.append(cp)
    control = re.compile(f"[{_char_class(drop)}\\U000e0000-\\U000e007f]+")
    ps = _char_class(punct) + "\U0001f000-\U0001faff"
    # One CJK character | a run of anything but whitespace, CJK and punctuation (letters and
    # digits with their combining marks, which Indic scripts need) | one punctuation mark.
    token = re.compile(f"[{CJK_CLASS}]|[^\\s{CJK_CLASS}{ps}]+|[{ps}]")
    return control, token


def normalize(text: str) -> str:
    """CCNet-style normalisation of ``text`` (newlines are kept)."""
    control, _ = _patterns()
    if text.isascii():
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKD", text).lower()
        text = _ACCENTS.sub("", text)
        text = _FOLD.sub(_fold, text)
        text = unicodedata.normalize("NFC", text)
    text = control.sub("", text)
    return _DIGIT.sub("0", text)


def _normalize_for_tokens(text: str) -> str:
    return _REPEATED_PUNCT.sub(r"\1", normalize(text))


def tokenize(line: str) -> str:
    """Space-separated tokens of one normalised line (see the module docstring)."""
    return " ".join(_patterns()[1].findall(_REPEATED_PUNCT.sub(r"\1", line)))


def prepare_lines(text: str, do_normalize: bool = True) -> list[str]:
    """The non-empty tokenised lines of a document, ready for ``lmplz`` or scoring.

    With ``do_normalize=False`` (a user's model trained on other text) lines are only
    whitespace-collapsed, not normalised or re-tokenised.
    """
    out = []
    if not do_normalize:
        for ln in text.split("\n"):
            ln = _SPACES.sub(" ", ln).strip()
            if ln:
                out.append(ln)
        return out
    findall = _patterns()[1].findall
    for ln in _normalize_for_tokens(text).split("\n"):
        toks = findall(ln)
        if toks:
            out.append(" ".join(toks))
    return out


def training_lines(texts: Iterable[str]) -> Iterator[str]:
    """Normalised, tokenised lines of many documents (one line of ``lmplz`` input each)."""
    for t in texts:
        if t:
            yield from prepare_lines(t)


def perplexity_of(log10_prob: float, n_tokens: int) -> float:
    """Perplexity from a summed log10 probability over ``n_tokens`` predicted tokens."""
    return 10.0 ** (-log10_prob / n_tokens)


class Scorer:
    """KenLM models per language, loaded on first use (ARPA or binary, as kenlm reads both).

    Args:
        model_paths: language code -> model file.
        do_normalize: apply :func:`normalize` and :func:`tokenize` before scoring (True for
            models from ``train-lm``; a user's model trained on differently prepared text
            may want False).
    """

    def __init__(self, model_paths: Mapping[str, str], do_normalize: bool = True):
        self.model_paths = dict(model_paths)
        self.do_normalize = do_normalize
        self._models: dict[str, object] = {}

    def model(self, lang: str):
        """The loaded model of ``lang`` (KeyError when there is none)."""
        m = self._models.get(lang)
        if m is None:
            import kenlm

            m = kenlm.Model(self.model_paths[lang])
            self._models[lang] = m
        return m

    def has(self, lang: str | None) -> bool:
        return lang is not None and lang in self.model_paths

    def log10_prob(self, text: str, lang: str) -> tuple[float, int]:
        """Summed log10 probability of a document's lines and the tokens predicted (with ``</s>``)."""
        score = self.model(lang).score  # type: ignore[attr-defined]
        total = 0.0
        n = 0
        for ln in prepare_lines(text, self.do_normalize):
            total += score(ln, bos=True, eos=True)
            n += ln.count(" ") + 2
        return total, n

    def perplexity(self, text: str | None, lang: str | None) -> float | None:
        """Perplexity of ``text`` under the model of ``lang``; None without a model or tokens."""
        if not text or not self.has(lang):
            return None
        total, n = self.log10_prob(text, lang)  # type: ignore[arg-type]
        if n == 0:
            return None
        return perplexity_of(total, n)
