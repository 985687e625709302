"""quality: heuristic quality signals (Gopher, C4, FineWeb) as columns, and rules on them.

Every rule (:mod:`filters.rules`) writes its signal column(s) into the kept and the rejected
shards, whether it is on or not. Each built-in rule's threshold is a top-level config key
(``None``/``false`` turns it off) and its reason code is ``quality.<rule>``; a user's rules
are added by import path or entry-point name under ``rules``. A rejected document's
``reason`` is the first rule it breaks (repetition rules first) and its ``detail`` lists every
rule it breaks.

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
from typing import Any

import pyarrow as pa
from pydantic import create_model, field_validator, model_serializer
from pydantic_core import PydanticCustomError

from curate.config import StageConfig
from curate.errors import ConfigError
from curate.schema import make_rejected
from curate.stage import MapStage, ShardResult
from filters import rules as R
from filters.heuristics import Doc


class QualityBase(StageConfig):
    """The quality stage's own keys; :data:`QualityConfig` adds every built-in rule's parameters.

    Attributes:
        cjk_mode_min_frac: share of words that are Han/kana characters from which a document
            is judged in CJK mode.
        cjk_chars_per_word: in CJK mode, CJK characters per word for the word count and the
            length factor of the Gopher n-gram rules (character n-grams).
        lang_column: the column with the language code (the langid stage's ``lang``).
        default_lang: language of documents when the column is absent or null.
        exempt_sources: sources whose documents the rules never reject (signals are still
            written), e.g. code.
        rules: a user's rules, ``{"package.module:Class" or entry-point name: {parameter:
            value}}`` (``null`` or ``{}`` for the rule's defaults); they decide after the
            built-in rules, in this order.
    """

    cjk_mode_min_frac: float = 0.5
    cjk_chars_per_word: float = 2.0
    lang_column: str = "lang"
    default_lang: str | None = None
    exempt_sources: list[str] = []
    rules: dict[str, dict[str, Any] | None] = {}

    @field_validator("rules")
    @classmethod
    def _load_rules(cls, v: dict) -> dict:
        try:
            return R.check_plugins(v)
        except ConfigError as e:
            raise PydanticCustomError("quality_rule", "{msg}", {"msg": str(e)}) from None

    @model_serializer(mode="wrap")
    def _drop_empty_rules(self, handler):
        # Without plugin rules the config dumps (and hashes) as it did before ``rules``
        # existed, so finished runs stay resumable.
        data = handler(self)
        if not data.get("rules"):
            data.pop("rules", None)
        return data


def _config_doc() -> str:
    lines = ["Config of the quality stage (unknown keys are errors).", "",
             "Built-in rule parameters (``None``/``false`` turns a rule off):", ""]
    for cls in R.builtin_rules():
        lines.append(f"* ``{'``, ``'.join(cls.params)}``: quality.{cls.code}: {cls.meaning}")
    return "\n".join(lines) + "\n\n" + (QualityBase.__doc__ or "")


QualityConfig = create_model(
    "QualityConfig", __base__=QualityBase, __module__=__name__, __doc__=_config_doc(), **R.config_fields()
)


class QualityStage(MapStage):
    name = "quality"
    version = "1"
    Config = QualityConfig

    def setup(self) -> None:
        self.rules = R.make_rules(self.config)
        self.active = [r for r in self.rules if r.enabled]
        self.fields = R.signal_fields(self.rules)

    def score(
        self, texts: list[str | None], langs: list[str | None], ids: list[str] | None = None
    ) -> tuple[list[dict], list[list[str]]]:
        """Signals and the codes of the failed rules of each document."""
        cfg = self.config
        default_lang, frac, cpw = cfg.default_lang, cfg.cjk_mode_min_frac, cfg.cjk_chars_per_word
        rules, active, n_fields = self.rules, self.active, len(self.fields)
        signals, failed = [], []
        for i, (text, lang) in enumerate(zip(texts, langs)):
            doc = Doc(text or "", lang or default_lang, frac, cpw)
            s = {"quality_cjk": doc.cjk}
            rule = None
            try:
                for rule in rules:
                    s.update(rule.score(doc))
                if len(s) != n_fields:
                    rule = self._misdeclared(doc)
                    got = set(rule.score(doc))
                    raise KeyError(f"it returned the signals {sorted(got)} but declares {sorted(rule.signals)}")
                bad = []
                for rule in active:
                    if not rule.keep(s):
                        bad.append(rule.code)
            except Exception as e:  # noqa: BLE001 (a rule's bug becomes one line naming rule and record)
                rec = ids[i] if ids is not None else str(i)
                name = f"{type(rule).__module__}:{type(rule).__qualname__}" if rule else "?"
                raise R.RuleError(f"quality rule {name} failed on record {rec!r}: {type(e).__name__}: {e}",
                                  record=rec) from e
            signals.append(s)
            failed.append(bad)
        return signals, failed

    def _misdeclared(self, doc: Doc) -> R.Rule:
        """The first rule whose ``score`` does not return exactly its declared signals."""
        return next(r for r in self.rules if set(r.score(doc)) != set(r.signals))

    def process(self, table: pa.Table) -> ShardResult:
        if not hasattr(self, "rules"):
            self.setup()
        cfg = self.config
        texts = table.column("text").to_pylist()
        if cfg.lang_column in table.column_names:
            langs = table.column(cfg.lang_column).to_pylist()
        else:
            langs = [None] * table.num_rows
        ids = table.column("id").to_pylist() if "id" in table.column_names else None
        signals, failed = self.score(texts, langs, ids)
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
