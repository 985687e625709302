"""Quality rules as plugins (filters/rules.py): the test plugin ``tests/plugins/curate_shouty``
lives outside the source tree and is found by import path or through its ``curate.rules``
entry point (a ``.dist-info`` folder beside it), only when the test puts it on the path."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curate import reasons
from curate.config import build_config
from curate.errors import ConfigError
from curate.schema import CORE_FIELDS
from filters import rules as R
from stages.quality import QualityConfig, QualityStage
from tests.warcfixtures import article

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
SHOUTY = "curate_shouty.rules:NoShouting"
CURATE = Path(sys.executable).parent / "curate"

SENTENCES = [
    "The harbour town was built on a narrow strip of land between the cliffs and the sea.",
    "Fishing boats left before dawn and came back in the afternoon with their holds full.",
    "In the square, the market opened at eight and closed when the bell of the church rang noon.",
    "Most of the houses were painted white, with blue shutters that the salt air slowly faded.",
    "A small museum near the pier kept old nets, maps and the logbooks of the first captains.",
    "Every summer a festival brought music to the streets and visitors from the whole coast.",
    "The school stood at the top of the hill, and the children walked up a long stone stair.",
    "When storms came in winter, the families gathered in the hall to wait for the wind to drop.",
    "The lighthouse keeper wrote down the weather three times a day for more than forty years.",
    "Our train crossed the plain slowly, stopping at villages whose names nobody could pronounce.",
    "By evening the sky over the wheat turned orange, and farmers drove their tractors home.",
    "A bakery beside the station sold bread so fresh that the paper bags were still warm.",
    "The library had moved twice since the war, and some of its books still carried old stamps.",
    "Students argued about poetry in the café until the owner stacked the chairs on the tables.",
    "On Sundays the river was full of rowing boats, and the bridges were crowded with walkers.",
    "The mountain road climbs through pine forest before it reaches the first snowfields.",
    "Shepherds once spent whole summers up there, coming down only when the first frost arrived.",
    "An old chapel near the pass offers shelter to hikers caught out by sudden storms.",
    "From the summit, on a clear morning, you can count seven lakes in the valleys below.",
    "Engineers spent a decade designing the tunnel that now carries trucks under the ridge.",
    "The orchestra rehearsed in a converted warehouse whose brick walls gave a warm sound.",
    "Each musician kept a pencil on the stand to mark the conductor's many small changes.",
    "Tickets for the opening concert sold out within an hour of going on sale last spring.",
    "After the performance, the audience stood and applauded for almost ten minutes.",
]


def _prose(k: int) -> list[str]:
    """Six distinct sentences; documents ``k`` and ``k + 1`` share three of them."""
    return [SENTENCES[(3 * k + j) % len(SENTENCES)] for j in range(6)]


def _table(texts: list[str], lang: str = "en") -> pa.Table:
    n = len(texts)
    return pa.table(
        {"id": [f"d{i}" for i in range(n)], "text": texts, "url": [f"u{i}" for i in range(n)],
         "domain": ["d"] * n, "source": ["web"] * n, "lang": [lang] * n},
        schema=pa.schema(list(CORE_FIELDS) + [pa.field("lang", pa.string())]),
    )


@pytest.fixture
def plugin_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    return PLUGINS


def _stage(cfg: dict) -> QualityStage:
    st = QualityStage(build_config(QualityConfig, cfg, "test.yaml"))
    st.setup()
    return st


def _sql(run: Path, query: str) -> list[dict]:
    out = subprocess.run([str(CURATE), "sql", query, "--run", str(run), "--format", "json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_plugin_rule_rejects_with_its_own_code_in_a_pipeline(tmp_path):
    """A JSONL.gz corpus through read -> langid -> quality (the plugin named by import path)
    -> dedup, run by the CLI with the plugin only on PYTHONPATH: shouting documents are
    rejected as quality.no_shouting (seen with ``curate sql``), the signal column is in both
    outputs, and every document is accounted for from stage to stage."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shouty = {1, 4, 6}
    docs = []
    for i in range(8):
        text = "\n".join(_prose(i))
        docs.append({"text": text.upper() if i in shouty else text, "url": f"https://harbour.example.org/{i}"})
    for name, part in (("000.jsonl.gz", docs[:5]), ("001.jsonl.gz", docs[5:])):
        (corpus / name).write_bytes(gzip.compress("".join(json.dumps(d) + "\n" for d in part).encode()))
    pipeline = {
        "pipeline": "plugin-rule", "executor": "local", "workers": 1,
        "stages": {
            "read": {"input": {"paths": [str(corpus)]}, "config": {"columns": {"text": "text", "url": "url"}}},
            "langid": {"input": "read"},
            "quality": {"input": "langid", "config": {"rules": {SHOUTY: {"max_caps_ratio": 0.5}}}},
            "dedup": {"input": "quality"},
        },
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
           "CURATE_NO_PROGRESS": "1"}
    out = subprocess.run([str(CURATE), "run", str(tmp_path / "p.yaml"), "--run", str(run)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr

    rejected = _sql(run, "SELECT url, reason, detail, shouty_caps_ratio FROM quality_rejected ORDER BY url")
    assert [r["url"] for r in rejected] == [docs[i]["url"] for i in sorted(shouty)]
    assert [r["reason"] for r in rejected] == ["quality.no_shouting"] * 3
    assert all(r["detail"] == "no_shouting" and r["shouty_caps_ratio"] > 0.9 for r in rejected)
    kept = _sql(run, "SELECT id, shouty_caps_ratio FROM quality")
    assert len(kept) == 5 and all(r["shouty_caps_ratio"] < 0.1 for r in kept)
    # The column travels on: dedup's output has it too.
    assert len(_sql(run, "SELECT shouty_caps_ratio FROM dedup")) == 5

    # Conservation: each stage's input is the previous stage's kept documents, split into
    # kept + rejected with nothing lost or doubled.
    stages = ("read", "langid", "quality", "dedup")
    rows = _sql(run, " UNION ALL ".join(
        f"SELECT '{st}' AS stage, k, id FROM (SELECT 'kept' AS k, id FROM {st} "
        f"UNION ALL SELECT 'rejected' AS k, id FROM {st}_rejected)" for st in stages))
    prev = None
    for st in stages:
        kept_ids = [r["id"] for r in rows if r["stage"] == st and r["k"] == "kept"]
        rej_ids = [r["id"] for r in rows if r["stage"] == st and r["k"] == "rejected"]
        assert len(set(kept_ids + rej_ids)) == len(kept_ids) + len(rej_ids), st
        if prev is not None:
            assert set(kept_ids) | set(rej_ids) == prev, st
        assert json.loads((run / st / "_manifest.json").read_text())["conservation"]["ok"] is True, st
        prev = set(kept_ids)
    assert len(prev) == 5
    man = json.loads((run / "quality" / "_manifest.json").read_text())
    assert man["input_rows"] == 8 and man["kept_rows"] == 5 and man["rejected_rows"] == 3
    assert man["reasons"] == {"quality.no_shouting": 3}
    assert man["config"]["rules"] == {SHOUTY: {"max_caps_ratio": 0.5, "min_letters": 20}}
    # The signal column comes right after the built-in signals, in both outputs.
    for p in [*sorted((run / "quality").glob("part-*.parquet")), *sorted((run / "quality" / "rejected").glob("*.parquet"))]:
        names = pq.read_schema(p).names
        assert names.index("shouty_caps_ratio") == names.index("fineweb_newlines") + 1


def test_bad_import_path_is_one_line_from_the_cli(tmp_path):
    pipeline = {"pipeline": "bad-rule", "executor": "local", "stages": {
        "extract": {"input": {"paths": [str(tmp_path)]}},
        "quality": {"input": "extract", "config": {"rules": {"no_such_pkg.rules:Nope": {}}}},
    }}
    (tmp_path / "a.html").write_text(article("t", _prose(0)), encoding="utf-8")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    out = subprocess.run([str(CURATE), "run", str(tmp_path / "p.yaml"), "--run", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "CURATE_NO_PROGRESS": "1"})
    assert out.returncode != 0
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "no_such_pkg.rules:Nope" in lines[0] and "cannot import" in lines[0], lines
    assert "Traceback" not in out.stderr


def test_entry_point_name_and_decisions_in_process(plugin_path):
    """The rule found by its entry-point name; the doc view's analyses are shared with it."""
    normal = " ".join(_prose(0))
    st = _stage({"rules": {"shouty": None}})
    res = st.process(_table([normal, normal.upper(), "数据" * 40]))
    assert res.kept.column("id").to_pylist() == ["d0"]
    rej = {r["id"]: r for r in res.rejected.to_pylist()}
    assert rej["d1"]["reason"] == "quality.no_shouting" and rej["d1"]["detail"] == "no_shouting"
    # Too few cased letters: no signal (null), and the rule passes (built-in rules reject it).
    assert rej["d2"]["shouty_caps_ratio"] is None and "no_shouting" not in rej["d2"]["detail"]
    assert res.stats["breaks_no_shouting"] == 1
    assert reasons.meaning("quality.no_shouting").startswith("more than max_caps_ratio")
    # Switched off: the column is still written, nothing is rejected by it.
    off = _stage({"rules": {"shouty": {"max_caps_ratio": None}}}).process(_table([normal.upper()]))
    assert off.rejected.num_rows == 0 and off.kept.column("shouty_caps_ratio")[0].as_py() > 0.9


@pytest.mark.parametrize("rules,needles", [
    ({SHOUTY: {"max_caps": 0.3}}, ["unknown parameter 'max_caps'", SHOUTY, "did you mean 'max_caps_ratio'"]),
    ({SHOUTY: {"max_caps_ratio": "loud"}}, [SHOUTY, "max_caps_ratio"]),
    ({"curate_shouty.rules:Missing": {}}, ["curate_shouty.rules:Missing", "no attribute"]),
    ({"nopkg_zz.mod:Rule": {}}, ["nopkg_zz.mod:Rule", "cannot import module 'nopkg_zz.mod'"]),
    ({"shoutyy": {}}, ["'shoutyy'", "curate.rules", "did you mean 'shouty'"]),
    ({"tests.test_rules:NotARule": {}}, ["tests.test_rules:NotARule", "not a quality rule"]),
    ({"tests.test_rules:ClashingCode": {}}, ["code 'c4_curly_brace' is already used by a built-in rule"]),
    ({"tests.test_rules:ClashingColumn": {}}, ["signal column 'gopher_words' is already written"]),
    ({"tests.test_rules:NoMeaning": {}}, ["needs a one-line `meaning`"]),
    ({"tests.test_rules:NoKeep": {}}, ["tests.test_rules:NoKeep", "needs a `keep(signals) -> bool` method"]),
])
def test_bad_rule_configs_are_one_line_errors(plugin_path, rules, needles):
    with pytest.raises(ConfigError) as e:
        build_config(QualityConfig, {"rules": rules}, "pipe.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "pipe.yaml" in msg
    for needle in needles:
        assert needle in msg


def test_unknown_top_level_key_is_still_an_error():
    with pytest.raises(ConfigError, match="unknown key 'gopher_max_dup_linez'"):
        build_config(QualityConfig, {"gopher_max_dup_linez": 0.1}, "pipe.yaml")


def test_rule_failure_names_rule_and_record():
    st = _stage({"rules": {"tests.test_rules:Raises": {}}})
    with pytest.raises(R.RuleError, match=r"tests\.test_rules:Raises failed on record 'd1': ZeroDivisionError") as e:
        st.process(_table(["fine text " * 30, "boom " * 30]))
    assert e.value.record == "d1"


def test_undeclared_signal_is_an_error():
    st = _stage({"rules": {"tests.test_rules:ForgetsItsColumn": {}}})
    with pytest.raises(R.RuleError, match="ForgetsItsColumn.*forgot_me"):
        st.process(_table(["some text " * 30]))


def test_builtin_signal_columns_keep_their_order_and_types():
    """The columns of the kept and rejected shards, as before rules became classes."""
    st = _stage({})
    floats = {"gopher_dup_lines", "gopher_dup_paras", "gopher_dup_line_chars", "gopher_dup_para_chars",
              *(f"gopher_top_{n}gram" for n in (2, 3, 4)), *(f"gopher_dup_{n}gram" for n in range(5, 11)),
              "gopher_mean_word_len", "gopher_symbol_ratio", "gopher_bullet_lines", "gopher_ellipsis_lines",
              "gopher_alpha_words", "c4_javascript_lines", "c4_policy_lines", "c4_no_punct_lines",
              "fineweb_line_punct", "fineweb_short_lines", "fineweb_dup_line_chars", "fineweb_newlines"}
    ints = {"gopher_words", "gopher_stop_words", "c4_sentences"}
    bools = {"quality_cjk", "c4_lorem_ipsum", "c4_curly_brace"}
    names = [f.name for f in st.fields]
    assert names[:4] == ["quality_cjk", "gopher_dup_lines", "gopher_dup_paras", "gopher_dup_line_chars"]
    assert names[-4:] == ["fineweb_line_punct", "fineweb_short_lines", "fineweb_dup_line_chars", "fineweb_newlines"]
    assert set(names) == floats | ints | bools and len(names) == 31
    for f in st.fields:
        want = pa.bool_() if f.name in bools else pa.int32() if f.name in ints else pa.float32()
        assert f.type == want, f.name
    # Decision order = registration order; min/max word rules share one column.
    codes = [r.code for r in st.rules]
    assert codes.index("gopher_max_dup_10gram") < codes.index("gopher_min_words") < codes.index("gopher_max_words")


def test_config_dump_without_plugins_has_no_rules_key(plugin_path):
    """Existing configs hash as before (finished runs stay resumable); plugins are recorded
    with their defaults filled in."""
    assert "rules" not in QualityConfig().model_dump(mode="json")
    dumped = build_config(QualityConfig, {"rules": {"shouty": None}}, "t").model_dump(mode="json")
    assert dumped["rules"] == {"shouty": {"max_caps_ratio": 0.5, "min_letters": 20}}
    # A worker rebuilds the same config from the dump.
    assert QualityConfig.model_validate(dumped).model_dump(mode="json") == dumped


class NotARule:
    code = "not_a_rule"


class _Passes(R.Rule):
    def keep(self, signals):
        return True


class ClashingCode(_Passes):
    code = "c4_curly_brace"
    meaning = "clashes with a built-in code"


class ClashingColumn(_Passes):
    code = "clashing_column"
    meaning = "writes a column a built-in rule writes"
    signals = {"gopher_words": pa.int32()}


class NoMeaning(R.Rule):
    code = "no_meaning"


class NoKeep(R.Rule):
    code = "no_keep"
    meaning = "a rule that never says whether a document passes"


class Raises(R.Rule):
    code = "raises_on_boom"
    meaning = "test rule whose score fails on documents containing 'boom'"
    signals = {"boom_score": pa.float32()}

    def score(self, doc):
        return {"boom_score": 1 / 0 if "boom" in doc.text else 0.0}

    def keep(self, signals):
        return True


class ForgetsItsColumn(R.Rule):
    code = "forgets_its_column"
    meaning = "test rule that declares a column and does not score it"
    signals = {"forgot_me": pa.float32()}

    def keep(self, signals):
        return True
