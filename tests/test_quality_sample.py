"""Quality heuristics and KenLM perplexity on the generated sample crawl (samples/samplegen.py).

One pipeline per module: extract -> quality, and extract -> train-lm (reference: the ``wiki``
source) -> perplexity, all reading the extracted documents; ``labels.jsonl`` says which
documents are natural prose and which are planted spam or boilerplate. The language comes
from the pages' ``<html lang>`` (extract's ``html_lang``), so these tests do not depend on
language identification.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.errors import ConfigError
from curate.runner import run_pipeline
from stages.train_lm import find_tool

SOURCE_BY_DOMAIN = pytest.importorskip("samples.samplegen").SOURCE_BY_DOMAIN

def _rows(stage_dir: Path) -> list[dict]:
    rows = []
    for p in sorted(stage_dir.glob("part-*.parquet")) + sorted((stage_dir / "rejected").glob("part-*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    """P(a random positive scores above a random negative), ties counting one half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@pytest.fixture(scope="module")
def sample_run(sample_corpus, tmp_path_factory):
    try:
        find_tool("lmplz")
        have_lmplz = True
    except ConfigError:
        have_lmplz = False
    stages = {
        "extract": {"input": {"paths": [str(sample_corpus)]}, "config": {"source_by_domain": SOURCE_BY_DOMAIN}},
        "quality": {"input": "extract", "config": {"lang_column": "html_lang"}},
    }
    if have_lmplz:
        stages["train-lm"] = {
            "input": "extract",
            "config": {"reference_source": "wiki", "lang_column": "html_lang", "memory": "200M"},
        }
        stages["perplexity"] = {
            "input": "extract",
            "config": {"models_from": "train-lm", "lang_column": "html_lang", "keep_buckets": ["head", "middle"]},
        }
    run = tmp_path_factory.mktemp("qsample")
    manifests = run_pipeline(
        {"pipeline": "quality-sample", "executor": "local", "workers": 1, "stages": stages}, run, log=lambda *_: None
    )
    labels = {}
    with open(sample_corpus / "labels.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["is_document"] and rec["warc_type"] in ("response", "resource"):
                labels[rec["uri"]] = rec
    return run, manifests, labels, have_lmplz


def test_ppl_separates_spam_from_prose(sample_run):
    """ROC AUC >= 0.95 for planted spam vs natural prose, per language with a model and
    pooled (on each document's perplexity percentile within its language)."""
    run, manifests, labels, have_lmplz = sample_run
    if not have_lmplz:
        pytest.skip("lmplz not built: run `make lmplz` (CI does) to run the perplexity AUC test")
    assert set(manifests["train-lm"]["models"]) >= {"en", "zh"}
    scored = []
    for r in _rows(run / "perplexity"):
        lab = labels.get(r["url"])
        if lab and lab["kind"] in ("prose", "spam") and r["ppl"] is not None:
            scored.append((r["html_lang"], lab["kind"], r["ppl"]))
    pooled_pos, pooled_neg = [], []
    for lang in manifests["train-lm"]["models"]:
        spam = [p for lg, k, p in scored if lg == lang and k == "spam"]
        prose = [p for lg, k, p in scored if lg == lang and k == "prose"]
        if not spam or not prose:
            continue
        assert len(prose) >= 100, f"{lang}: too few prose documents to judge"
        auc = roc_auc(spam, prose)
        assert auc >= 0.95, f"{lang}: ROC AUC {auc:.3f} (spam {len(spam)}, prose {len(prose)})"
        everything = sorted(spam + prose)
        rank = {p: i / (len(everything) - 1) for i, p in enumerate(everything)}
        pooled_pos += [rank[p] for p in spam]
        pooled_neg += [rank[p] for p in prose]
    assert len(pooled_pos) >= 10
    assert roc_auc(pooled_pos, pooled_neg) >= 0.95


def test_most_spam_lands_in_the_dropped_tail(sample_run):
    run, manifests, labels, have_lmplz = sample_run
    if not have_lmplz:
        pytest.skip("lmplz not built: run `make lmplz` (CI does) to run the perplexity tests")
    buckets = Counter()
    for r in _rows(run / "perplexity"):
        lab = labels.get(r["url"])
        if lab and lab["kind"] == "spam" and r["ppl"] is not None:
            buckets[r["ppl_bucket"]] += 1
            assert (r.get("reason") == "perplexity.tail") == (r["ppl_bucket"] == "tail")
    assert buckets["tail"] >= 0.8 * sum(buckets.values())
    m = manifests["perplexity"]
    assert m["input_rows"] == manifests["extract"]["kept_rows"]
    assert m["reasons"]["perplexity.tail"] == m["buckets"]["tail"]


def test_boilerplate_pages_rejected_with_reasons(sample_run):
    run, manifests, labels, _ = sample_run
    seen = 0
    for r in _rows(run / "quality"):
        lab = labels.get(r["url"])
        if lab and lab["kind"] == "boilerplate":
            seen += 1
            assert r.get("reason", "").startswith("quality."), (r["url"], r["text"][:200])
            assert r["detail"]
    assert seen >= 1
    m = manifests["quality"]
    assert m["input_rows"] == m["kept_rows"] + m["rejected_rows"]
    assert all(k.startswith("quality.") for k in m["reasons"])


def test_no_cjk_prose_rejected_by_word_count(sample_run):
    run, _, labels, _ = sample_run
    cjk_prose = 0
    for r in _rows(run / "quality"):
        lab = labels.get(r["url"])
        if lab and lab["kind"] == "prose" and lab["lang"] in ("zh", "ja"):
            cjk_prose += 1
            assert r["quality_cjk"], r["url"]
            assert r.get("reason") not in ("quality.gopher_min_words", "quality.gopher_max_words"), r["url"]
            assert "gopher_min_words" not in (r.get("detail") or "").split(","), r["url"]
    assert cjk_prose >= 50
