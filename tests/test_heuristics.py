"""Heuristic quality signals and rules (filters/heuristics.py) and the quality stage."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate.config import build_config
from curate.errors import ConfigError
from curate.schema import CORE_FIELDS
from curate import reasons
from filters import heuristics as H
from filters import rules as R
from stages.quality import QualityConfig, QualityStage

EN_PROSE = """The river had been rising for three days before anyone in the village thought to move the grain. By the time the council met, the water was already lapping at the steps of the mill, and the miller's son had to carry the ledgers upstairs in a wooden crate.

Most of the farmers agreed that the old embankment would hold. It had been built by their grandparents with stone carried from the quarry on the hill, and it had survived worse floods than this one. Still, a few of the younger families packed their carts and waited near the road.

When the embankment finally gave way, it did so quietly. There was no roar, only a long sigh of mud and water sliding across the lower fields. The families near the road watched the water spread, and then they turned their carts toward the hill."""

ZH_PROSE = """今年春天，我和家人一起去了云南旅行。我们先在昆明住了两天，参观了翠湖公园和云南省博物馆。那里的天气非常舒服，阳光明媚，不冷也不热。

之后我们坐火车去了大理。大理古城的街道很安静，两边是白色的房子和小小的咖啡馆。晚上我们在洱海边散步，看着月亮慢慢升起来，心里觉得特别平静。

最后一站是丽江。虽然游客很多，但是古城里的小河和石板路还是让人印象深刻。这次旅行让我更加了解了中国西南地区的文化和自然风光。"""

JA_PROSE = """昨日は久しぶりに友人と京都へ出かけました。朝早く駅に集まり、電車で一時間ほどかけて嵐山に向かいました。竹林の道はまだ人が少なく、とても静かでした。

昼ご飯には湯豆腐を食べました。店の窓からは庭の紅葉が見えて、季節の移り変わりを感じることができました。午後は金閣寺を見学し、その美しさに改めて驚きました。

帰りの電車の中で、次は奈良にも行きたいねと話しました。忙しい毎日の中で、こうしてゆっくり過ごす時間はとても大切だと思います。"""

# A news paragraph that repeats names: character 5-grams repeat, word 5-grams do not.
ZH_NEWS = """联合国大会在临近年底时通过一项决议，确定了今后三年成员国的会费分摊比例表。联合国会费比例的能力支付原则，即以各国国民生产总值占世界国民生产总值的比重作为基数，同时考虑人均国民生产总值和人均外债负担状况来计算各国应缴的会费额。

目前联合国会费比例分摊实行的能力支付原则，是广大成员国所普遍接受的。调整会费涉及到全体会员国，不应由哪一个国家说了算，也不能由几个国家私下决定，而应由全体会员国民主协商解决，这才合情合理。联合国大会这次通过的决议还表示，会员国可以就今后的会费比例重开讨论。"""

BOILERPLATE = """Home
About us
Products
Contact
This website uses cookies to improve your experience.
Accept all cookies
Privacy Policy
Terms of Use
© 2024 Example Inc. All rights reserved."""


def _stage(**cfg) -> QualityStage:
    st = QualityStage(QualityConfig(**cfg))
    st.setup()
    return st


def _failed(text: str, lang: str | None = "en", **cfg) -> list[str]:
    _, failed = _stage(**cfg).score([text], [lang])
    return failed[0]


def test_english_prose_passes_every_default_rule():
    assert _failed(EN_PROSE) == []


@pytest.mark.parametrize("text,lang", [(ZH_PROSE, "zh"), (JA_PROSE, "ja"), (ZH_NEWS, "zh")])
def test_cjk_prose_is_not_rejected(text, lang):
    """No word-count rule (nor any other default rule) rejects natural Chinese/Japanese prose."""
    st = _stage()
    signals, failed = st.score([text], [lang])
    assert signals[0]["quality_cjk"] is True
    assert signals[0]["gopher_mean_word_len"] is None
    assert signals[0]["gopher_words"] >= 50
    assert "gopher_min_words" not in failed[0]
    assert failed[0] == []


@pytest.mark.parametrize("text,lang", [(ZH_PROSE, "zh"), (JA_PROSE, "ja")])
def test_cjk_prose_without_cjk_mode_would_fail_word_rules(text, lang):
    """The switch matters: judged as space-separated words the same pages are rejected."""
    failed = _failed(text, lang, cjk_mode_min_frac=1.01)
    assert "gopher_min_words" in failed or "gopher_mean_word_len" in failed


def test_cjk_ngram_rules_use_longer_character_ngrams():
    """Single-character 5-grams flag news that repeats names; word-length n-grams do not."""
    assert "gopher_max_dup_5gram" in _failed(ZH_NEWS, "zh", cjk_chars_per_word=1.0)
    assert _failed(ZH_NEWS, "zh") == []


def test_cjk_stop_words_are_characters():
    sw = H.StopWords.of(["的", "是"])
    assert sw.as_chars and sw.count("我的书是你的") == 3
    text = ZH_PROSE.replace("的", "").replace("是", "").replace("了", "").replace("在", "")
    text = text.replace("和", "").replace("有", "").replace("不", "").replace("这", "")
    assert "gopher_min_stop_words" in _failed(text, "zh")


def test_boilerplate_page_rejected_with_reasons():
    st = _stage()
    table = pa.table(
        {"id": ["a", "b"], "text": [EN_PROSE, BOILERPLATE], "url": ["u1", "u2"], "domain": ["d", "d"],
         "source": ["web", "web"], "lang": ["en", "en"]},
        schema=pa.schema(list(CORE_FIELDS) + [pa.field("lang", pa.string())]),
    )
    res = st.process(table)
    assert res.kept.column("id").to_pylist() == ["a"]
    assert res.rejected.column("id").to_pylist() == ["b"]
    assert res.rejected.column("reason").to_pylist() == ["quality.gopher_min_words"]
    detail = res.rejected.column("detail")[0].as_py().split(",")
    assert {"gopher_min_words", "c4_min_sentences", "fineweb_max_short_lines"} <= set(detail)
    assert res.rejected.column("stage").to_pylist() == ["quality"]
    assert res.stats["breaks_c4_min_sentences"] == 1
    # Every signal is a column of both outputs.
    for f in st.fields:
        assert f.name in res.kept.column_names and f.name in res.rejected.column_names
    assert res.kept.column("c4_sentences").to_pylist() == [8]
    assert res.rejected.column("c4_policy_lines")[0].as_py() == pytest.approx(3 / 9, rel=1e-6)


def test_policy_and_javascript_line_rules_are_opt_in():
    page = EN_PROSE + "\nPlease enable JavaScript to view the comments.\nRead our cookie policy."
    assert _failed(page) == []
    assert _failed(page, c4_max_policy_lines=0.05)[0] == "c4_max_policy_lines"
    assert _failed(page, c4_max_javascript_lines=0.05)[0] == "c4_max_javascript_lines"


@pytest.mark.parametrize(
    "text,rule",
    [
        (EN_PROSE + "\n\nLorem ipsum dolor sit amet.", "c4_lorem_ipsum"),
        (EN_PROSE + "\nfunction f() { return 1; }", "c4_curly_brace"),
        ((EN_PROSE.split("\n\n")[0] + "\n") * 4, "gopher_max_dup_lines"),
        ("\n".join(["- item number %d of the list of things that we sell here" % i for i in range(40)]),
         "gopher_max_bullet_lines"),
        ("buy now cheap " * 60, "gopher_max_top_2gram"),
        (" ".join(["xq7 zz9 k3"] * 40), "gopher_max_top_2gram"),
    ],
)
def test_rules_fire_with_their_reason(text, rule):
    assert rule in _failed(text)


def test_repetition_rules_run_first():
    failed = _failed((EN_PROSE + "\n") * 3)
    assert failed[0].startswith("gopher_max_dup")


def test_signals_are_plain_numbers():
    st = _stage(stop_words={"en": ["the", "and"]})
    s = st.score([EN_PROSE], ["en"])[0][0]
    assert s["gopher_stop_words"] >= 2
    assert 0 <= s["fineweb_line_punct"] <= 1 and s["fineweb_line_punct"] == 1.0
    assert s["gopher_words"] == len(EN_PROSE.split())
    assert st.score([""], ["en"])[0][0]["gopher_words"] == 0
    assert set(s) == {f.name for f in st.fields}


def test_disabled_rule_and_missing_lang():
    no_stop = "Quick brown foxes jump over lazy dogs in green fields. " * 10
    assert "gopher_min_stop_words" in _failed(no_stop, "en")
    assert "gopher_min_stop_words" not in _failed(no_stop, None)  # no language, no list
    assert "gopher_min_stop_words" not in _failed(no_stop, "en", gopher_min_stop_words=None)


def test_every_rule_has_a_config_threshold_and_unknown_keys_fail():
    builtins = R.builtin_rules()
    codes = [r.code for r in builtins]
    assert len(set(codes)) == len(codes) == 31
    for cls in builtins:
        assert set(cls.params) <= set(QualityConfig.model_fields)
        assert reasons.meaning(f"quality.{cls.code}"), cls.code
    with pytest.raises(ConfigError, match="gopher_min_word"):
        build_config(QualityConfig, {"gopher_min_word": 10}, "test.yaml")
    cfg = build_config(QualityConfig, {"gopher_mean_word_len": [2, 12], "c4_curly_brace": False}, "t")
    assert cfg.gopher_mean_word_len == (2, 12)


def test_rerun_on_own_output_replaces_signal_columns():
    st = _stage()
    table = pa.table({"id": ["a"], "text": [EN_PROSE], "url": ["u"], "domain": ["d"], "source": ["web"]},
                     schema=pa.schema(list(CORE_FIELDS)))
    once = st.process(table).kept
    twice = st.process(once).kept
    assert twice.column_names == once.column_names
    assert twice.equals(once)
