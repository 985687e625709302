"""quality: heuristic quality signals (Gopher, C4, FineWeb) as columns, and rules on them.

Every signal of :func:`filters.heuristics.compute_signals` becomes a column of the kept and
the rejected shards. Each rule has a threshold in the config (``None``/``false`` turns it off)
and its own reason code ``quality.<rule>``; a rejected document's ``reason`` is the first rule
it breaks (repetition rules first) and its ``detail`` lists every rule it breaks.

Defaults are the published values: Gopher (Rae et al. 2021, appendix A), C4 (Raffel et al.
2020) and FineWeb (Penedo et al. 2024). C4 *removes* lines without terminal punctuation, with
"javascript" or policy notices; this stage keeps the text unchanged and reports those lines
as fractions (doc-level thresholds, off by default) and the sentences C4 would keep
(``c4_min_sentences``, C4's own page rule).

Chinese and Japanese pages are judged in CJK mode (see :mod:`filters.heuristics`): word
counts are CJK characters / ``cjk_chars_per_word``, the Gopher n-gram rules use character
n-grams ``cjk_chars_per_word`` times longer, and the mean-word-length rule does not apply.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from curate.config import StageConfig
from curate.schema import make_rejected
from curate.stage import MapStage, ShardResult
from filters import heuristics as H

# Gopher's English stop words; one-character function words for Chinese and Japanese.
DEFAULT_STOP_WORDS: dict[str, list[str]] = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "zh": ["的", "是", "在", "了", "和", "有", "不", "这"],
    "ja": ["の", "に", "は", "を", "た", "が", "で", "て"],
}

BOOL_SIGNALS = ("quality_cjk", "c4_lorem_ipsum", "c4_curly_brace")
INT_SIGNALS = ("gopher_words", "gopher_stop_words", "c4_sentences")


class QualityConfig(StageConfig):
    """Thresholds of the quality stage (``None`` turns a rule off).

    ``max_*`` rules reject a document whose signal is above the threshold, ``min_*`` rules
    one whose signal is below it; ``gopher_mean_word_len`` is a ``[low, high]`` range.

    Attributes:
        gopher_max_dup_lines / gopher_max_dup_paras: share of lines / paragraphs equal to an
            earlier one.
        gopher_max_dup_line_chars / gopher_max_dup_para_chars: share of characters in them.
        gopher_max_top_{2,3,4}gram: share of word characters in the most frequent n-gram.
        gopher_max_dup_{5..10}gram: share of word characters covered by repeated n-grams.
        gopher_min_words / gopher_max_words: word count (in CJK mode, estimated from characters).
        gopher_mean_word_len: mean word length range (not applied in CJK mode).
        gopher_max_symbol_ratio: ``#`` and ellipses per word.
        gopher_max_bullet_lines / gopher_max_ellipsis_lines: share of lines starting with a
            bullet / ending with an ellipsis.
        gopher_min_alpha_words: share of words with a letter.
        gopher_min_stop_words: stop-word occurrences (languages listed in ``stop_words``).
        c4_lorem_ipsum / c4_curly_brace: reject pages containing "lorem ipsum" / "{".
        c4_max_javascript_lines / c4_max_policy_lines / c4_max_no_punct_lines: doc-level
            limits on the lines C4 would remove.
        c4_min_sentences: sentences left after C4's line removal.
        fineweb_min_line_punct: share of lines ending in terminal punctuation.
        fineweb_max_short_lines: share of lines of at most ``short_line_chars`` characters
            (``short_line_chars_cjk`` in CJK mode).
        fineweb_max_dup_line_chars: share of characters in duplicated lines.
        fineweb_max_newlines: newlines per word.
        cjk_mode_min_frac: share of words that are Han/kana characters from which a document
            is judged in CJK mode.
        cjk_chars_per_word: in CJK mode, CJK characters per word for the word count and the
            length factor of the Gopher n-gram rules (character n-grams).
        stop_words: language code -> stop words (single characters for CJK languages).
        lang_column: the column with the language code (the langid stage's ``lang``).
        default_lang: language of documents when the column is absent or null.
        exempt_sources: sources whose documents the rules never reject (signals are still written), e.g. code.
    """

    gopher_max_dup_lines: float | None = 0.30
    gopher_max_dup_paras: float | None = 0.30
    gopher_max_dup_line_chars: float | None = 0.20
    gopher_max_dup_para_chars: float | None = 0.20
    gopher_max_top_2gram: float | None = 0.20
    gopher_max_top_3gram: float | None = 0.18
    gopher_max_top_4gram: float | None = 0.16
    gopher_max_dup_5gram: float | None = 0.15
    gopher_max_dup_6gram: float | None = 0.14
    gopher_max_dup_7gram: float | None = 0.13
    gopher_max_dup_8gram: float | None = 0.12
    gopher_max_dup_9gram: float | None = 0.11
    gopher_max_dup_10gram: float | None = 0.10
    gopher_min_words: int | None = 50
    gopher_max_words: int | None = 100_000
    gopher_mean_word_len: tuple[float, float] | None = (3.0, 10.0)
    gopher_max_symbol_ratio: float | None = 0.10
    gopher_max_bullet_lines: float | None = 0.90
    gopher_max_ellipsis_lines: float | None = 0.30
    gopher_min_alpha_words: float | None = 0.80
    gopher_min_stop_words: int | None = 2
    c4_lorem_ipsum: bool = True
    c4_curly_brace: bool = True
    c4_max_javascript_lines: float | None = None
    c4_max_policy_lines: float | None = None
    c4_max_no_punct_lines: float | None = None
    c4_min_sentences: int | None = 5
    fineweb_min_line_punct: float | None = 0.12
    fineweb_max_short_lines: float | None = 0.67
    fineweb_max_dup_line_chars: float | None = 0.01
    fineweb_max_newlines: float | None = 0.30
    short_line_chars: int = 30
    short_line_chars_cjk: int = 15
    cjk_mode_min_frac: float = 0.5
    cjk_chars_per_word: float = 2.0
    stop_words: dict[str, list[str]] = DEFAULT_STOP_WORDS
    lang_column: str = "lang"
    default_lang: str | None = None
    exempt_sources: list[str] = []


def signal_schema() -> list[pa.Field]:
    """The signal columns, in the order compute_signals returns them."""
    sample = H.compute_signals("")
    fields = []
    for name in sample:
        if name in BOOL_SIGNALS:
            fields.append(pa.field(name, pa.bool_()))
        elif name in INT_SIGNALS:
            fields.append(pa.field(name, pa.int32()))
        else:
            fields.append(pa.field(name, pa.float32()))
    return fields


class QualityStage(MapStage):
    name = "quality"
    version = "1"
    Config = QualityConfig

    def setup(self) -> None:
        cfg: QualityConfig = self.config  # type: ignore[assignment]
        self.thresholds = {r: getattr(cfg, r) for r in H.RULE_NAMES}
        self.stop_words = {lang: H.StopWords.of(ws) for lang, ws in cfg.stop_words.items()}
        self.fields = signal_schema()

    def score(self, texts: list[str | None], langs: list[str | None]) -> tuple[list[dict], list[list[str]]]:
        """Signals and failed rules of each document."""
        cfg: QualityConfig = self.config  # type: ignore[assignment]
        signals, failed = [], []
        for text, lang in zip(texts, langs):
            s = H.compute_signals(
                text or "",
                self.stop_words.get(lang or cfg.default_lang or ""),
                cjk_mode_min_frac=cfg.cjk_mode_min_frac,
                cjk_chars_per_word=cfg.cjk_chars_per_word,
                short_line_chars=cfg.short_line_chars,
                short_line_chars_cjk=cfg.short_line_chars_cjk,
            )
            signals.append(s)
            failed.append(H.failed_rules(s, self.thresholds))
        return signals, failed

    def process(self, table: pa.Table) -> ShardResult:
        if not hasattr(self, "thresholds"):
            self.setup()
        cfg: QualityConfig = self.config  # type: ignore[assignment]
        texts = table.column("text").to_pylist()
        if cfg.lang_column in table.column_names:
            langs = table.column(cfg.lang_column).to_pylist()
        else:
            langs = [None] * table.num_rows
        signals, failed = self.score(texts, langs)
        exempt = set(cfg.exempt_sources)
        if exempt:
            # Signals are still written; the natural-language rules do not decide these sources.
            for i, src in enumerate(table.column("source").to_pylist()):
                if src in exempt:
                    failed[i] = []

        for f in self.fields:
            col = pa.array([s[f.name] for s in signals], f.type)
            if f.name in table.column_names:
                table = table.set_column(table.schema.get_field_index(f.name), f, col)
            else:
                table = table.append_column(f, col)

        keep = pa.array([not fl for fl in failed], pa.bool_())
        kept = table.filter(keep)
        rej_idx = [i for i, fl in enumerate(failed) if fl]
        rejected = make_rejected(
            table.take(pa.array(rej_idx, pa.int64())),
            self.name,
            [f"{self.name}.{failed[i][0]}" for i in rej_idx],
            [",".join(failed[i]) for i in rej_idx],
        )
        breaks: Counter = Counter()
        for fl in failed:
            breaks.update(fl)
        stats = {f"breaks_{k}": v for k, v in sorted(breaks.items())}
        stats["cjk_mode_docs"] = sum(1 for s in signals if s["quality_cjk"])
        return ShardResult(kept, rejected, stats)


STAGE = QualityStage
