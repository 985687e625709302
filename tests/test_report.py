"""The run report (`curate report`) and `curate inspect`'s per-stage summaries.

The demo pipeline runs on the generated sample crawl (conftest's ``demo_run``); its report is opened in
Debian's Chromium (headless, driven through chromedriver by selenium), and every image must load
with no console error. The screenshot is kept under build/test-artifacts/.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.manifest import read_manifest
from curate.report import build_report
from curate.report_data import load_run
from curate.report_sections import num3
from curate.report_summary import stage_summary
from curate.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"


@pytest.fixture(scope="module")
def demo_report(demo_run, tmp_path_factory) -> tuple[Path, dict]:
    return build_report(demo_run, tmp_path_factory.mktemp("report") / "report.html")


def _text(page: str) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r'src="data:[^"]*"', "", page)))
    return " ".join(text.split())


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Chromium/chromedriver not installed: run `make browser` (make test does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--hide-scrollbars", "--window-size=1000,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_demo_report_loads_in_chromium(demo_report, capsys):
    path, info = demo_report
    browser = _browser()
    try:
        browser.get(path.resolve().as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => ({alt: i.alt, done: i.complete, w: i.naturalWidth}))")
        headings = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1000, min(int(height) + 50, 30000))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "report-demo.png"
        assert browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    with capsys.disabled():
        print(f"\nreport screenshot: {shot} (page: {path})")
    assert len(images) == info["charts"] >= 12
    assert all(i["done"] and i["w"] > 0 for i in images), [i["alt"] for i in images if not i["w"]]
    assert errors == []
    assert headings[: len(info["sections"])] == info["sections"]
    assert shot.stat().st_size > 50_000


def test_demo_report_covers_the_run(demo_run, demo_report):
    path, info = demo_report
    for title in ("Funnel", "Rejections", "Languages", "Perplexity", "Deduplication", "PII", "Pretraining mixture",
                  "Sample rejected documents"):
        assert title in info["sections"]
    # a section for another contract is shown exactly when the run holds its files, else listed with the reason
    metas = [json.loads(p.read_text()).get("format") for p in demo_run.glob("*/meta.json")]
    expect = {"SFT mixture": "curate-sft/1" in metas,
              "Vocabulary extension": any(demo_run.glob("*/id_map.json")),
              "Training, verification and ablations": any(demo_run.rglob("metrics.jsonl"))}
    for title, present in expect.items():
        assert (title in info["sections"]) == present and (title in info["absent"]) != present
    assert all(info["absent"].values())
    text = _text(path.read_text())
    assert ("Not in this run" in text) == bool(info["absent"])
    # the readings are computed from the run's own figures
    ext, pii, mix, dd = (read_manifest(demo_run / s) for s in ("extract", "pii", "mix", "dedup"))
    last = read_manifest(demo_run / "mix")
    assert f"{ext['input_rows']:,} records enter extract; {last['kept_rows']:,} documents" in text
    st = pii["stats"]
    assert f"{st['pii.total']:,} detections in {st['pii.docs_with_pii']:,} of {pii['input_rows']:,} documents" in text
    sources = mix["mixture"]["target_weights"]
    assert f"{mix['mixture']['train_tokens']:,} train tokens over {len(sources)} sources" in text
    cl = dd["clusters"]
    assert f"{cl['clusters']:,} clusters hold {cl['documents_in_clusters']:,} documents" in text
    cut = read_manifest(demo_run / "perplexity")["cutoffs"]
    for lang, (lo, hi) in cut.items():
        assert f"'{lang}' {num3(lo)} / {num3(hi)}" in text
    # every stage with rejections shows samples of its top reason
    for stage in ("extract", "quality", "perplexity", "dedup"):
        reasons = read_manifest(demo_run / stage)["reasons"]
        top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        assert f"{top} {reasons[top]:,} documents, stage {stage}" in text


def test_demo_report_shows_no_planted_pii(sample_corpus, demo_report):
    labels = [json.loads(x) for x in (sample_corpus / "labels.jsonl").read_text().splitlines() if x.strip()]
    planted = {p["value"] for lab in labels for p in lab.get("pii") or [] if len(p["value"]) >= 6}
    assert len(planted) > 20
    text = _text(demo_report[0].read_text())
    assert [v for v in planted if v in text] == []


def test_report_reads_only_and_is_deterministic(demo_run, tmp_path):
    def snapshot():
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(demo_run.rglob("*")) if p.is_file()}

    before = snapshot()
    a, _ = build_report(demo_run, tmp_path / "a.html")
    b, _ = build_report(demo_run, tmp_path / "b.html")
    assert snapshot() == before
    assert a.read_bytes() == b.read_bytes()


def test_partial_run_before_pii_scrubs_samples(tmp_path):
    """A run stopped after langid: the report skips what is missing, and the excerpts of documents
    rejected before pii ran are scrubbed for display."""
    pages = tmp_path / "html"
    pages.mkdir()
    email, phone = "greta.lindqvist@example-mail.org", "+1 415 555 0132"
    (pages / "contact.html").write_text(
        "<html><head><title>Contact</title></head><body><article><p>Please write to the office at "
        f"{email} or call {phone} between nine and five on weekdays. The office answers every letter "
        "within two weeks, and questions about orders are handled by the same team.</p></article></body></html>")
    spec = {"pipeline": "partial", "executor": "local", "workers": 1, "stages": {
        "extract": {"input": {"paths": [str(pages)]}},
        "langid": {"input": "extract", "config": {"allowed_langs": ["de"]}},
        "pii": {"input": "langid"}}}
    run = tmp_path / "run"
    run_pipeline(spec, run, stages=["extract", "langid"], log=lambda *_: None)
    path, info = build_report(run)
    assert path == run / "report.html"
    text = _text(path.read_text())
    assert "langid.unwanted_lang" in text and "<EMAIL>" in text and "<PHONE>" in text
    assert email not in text and phone not in text
    assert "Perplexity" in info["absent"] and "Pretraining mixture" in info["absent"]
    assert "not started" in text


def test_inspect_says_what_each_stage_did(demo_run):
    run = load_run(demo_run)
    pii = next(s for s in run.stages if s.name == "pii")
    st = pii.stats
    assert stage_summary(pii)[0] == (f"{st['pii.total']:,} detections in {st['pii.docs_with_pii']:,} documents "
                                     "(placeholder)")
    mix = next(s for s in run.stages if s.name == "mix")
    meta = json.loads((demo_run / "mix" / "meta.json").read_text())
    assert stage_summary(mix)[0] == f"{meta['train']['tokens']:,} train + {meta['val']['tokens']:,} val tokens"
    web = meta["sources"]["web"]
    assert (f"web {web['target_weight']:.2f}→{web['achieved_weight']:.2f} ×{web['epochs']:.2f}"
            in stage_summary(mix)[1])
    r = CliRunner().invoke(app, ["inspect", str(demo_run)])
    assert r.exit_code == 0, r.output
    assert "what it did" in r.output and "detections" in r.output and "cut-offs" in r.output


def test_report_command(demo_run, tmp_path):
    out = tmp_path / "r" / "page.html"
    r = CliRunner().invoke(app, ["report", str(demo_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file() and str(out.resolve()) in r.output.replace("\n", "")
    r = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "run directory not found" in r.output


def test_stage_stopped_half_way_counts_finished_shards(demo_run, tmp_path):
    """A stage without a manifest (stopped, or still running) is summed from its shard markers,
    and only the shards those markers list are read."""
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    q = run / "quality"
    (q / "_manifest.json").unlink()
    (q / "_SUCCESS").unlink()
    markers = sorted((q / "_shards").glob("*.json"))
    for m in markers[2:]:
        m.unlink()
    bodies = [json.loads(m.read_text()) for m in markers[:2]]
    bodies = [b.get("result", b) for b in bodies]
    stage = next(s for s in load_run(run).stages if s.name == "quality")
    assert stage.state == "running: 2 shards done"
    assert stage.counts["kept"] == sum(b["kept"] for b in bodies)
    assert stage.counts["rejected"] == sum(b["rejected"] for b in bodies)
    assert [f.name for f in stage.kept_files] == ["part-00000.parquet", "part-00001.parquet"]
    path, info = build_report(run)
    text = _text(path.read_text())
    assert "running: 2 shards done" in text and "Pretraining mixture" in info["sections"]
    r = CliRunner().invoke(app, ["inspect", str(run)])
    assert r.exit_code == 0 and "running: 2 shards" in r.output


def _rebase(node, prefixes: dict[str, Path]):
    """``node`` (parsed YAML) with every string that starts with a key of ``prefixes`` rebased."""
    if isinstance(node, dict):
        return {k: _rebase(v, prefixes) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v, prefixes) for v in node]
    if isinstance(node, str):
        for old, new in prefixes.items():
            if node.startswith(old):
                return str(new / node[len(old):])
    return node


def test_sft_run_report(shared_dir, demo_run, tmp_path):
    """The SFT pipeline (manifests/sft.yaml) on ../shared/sft: task shares, example lengths from
    the .idx offsets, and per-task perplexity with the sft-select cut-offs."""
    import numpy as np
    import yaml

    if not (shared_dir / "sft").is_dir():
        pytest.skip("../shared/sft is absent")
    spec = _rebase(yaml.safe_load((ROOT / "manifests" / "sft.yaml").read_text()),
                   {"data/sft/": shared_dir / "sft", "runs/demo/": demo_run})
    run = tmp_path / "sft"
    run_pipeline(spec, run, executor="local", workers=1, log=lambda *_: None)
    mix_dir = next(d for d in run.iterdir() if (d / "meta.json").is_file())
    meta = json.loads((mix_dir / "meta.json").read_text())
    assert meta["format"] == "curate-sft/1"
    path, info = build_report(run)
    assert "SFT mixture" in info["sections"]
    text = _text(path.read_text())
    tasks = meta["tasks"]
    gap = {t: abs(v["achieved_share"] - v["target_share"]) for t, v in tasks.items()}
    worst = max(gap, key=lambda t: (gap[t], t))
    assert f"{len(tasks)} tasks; the largest gap between achieved and target share is {gap[worst]:.4f} ({worst})" in text
    lengths = np.concatenate([np.diff(np.fromfile(mix_dir / f["idx"], dtype="<i8")) for f in meta["train"]["files"]])
    assert f"train: {lengths.size:,} examples, median {np.median(lengths):,.0f} tokens" in text
    assert "SFT ppl per task (sft-select)" in text
    cutoffs = read_manifest(run / "sft-select")["cutoffs"]
    for task in sorted(cutoffs)[:5]:
        if cutoffs[task]:
            lo, hi = cutoffs[task]
            assert f"{task}: median" in text and f"cut-offs {num3(lo)} / {num3(hi)}" in text


def test_vocab_run_report(sample_corpus, tmp_path):
    """A vocab stage extending the sample mixture's own BPE with Chinese pieces: the report shows
    characters per token before and after from its report.json."""
    spec = {"pipeline": "vocab-report", "executor": "local", "workers": 1, "stages": {
        "extract": {"input": {"paths": [str(sample_corpus)]}},
        "langid": {"input": "extract", "config": {"min_score": 0.5}},
        "mix0": {"type": "mix", "input": "langid", "config": {"mixture": {
            "name": "base", "budget_tokens": "max", "overlap": "first", "tokenizer": {"vocab_size": 1200},
            "sources": {"all": {"where": "true", "weight": 1}}}}},
        "vocab": {"input": ["langid", "mix0"], "config": {
            "base_from": "mix0", "text_from": "langid", "domain_where": "lang = 'zh'", "general_where": "lang = 'en'",
            "max_new": 300, "heldout_fraction": 0.2}}}}
    run = tmp_path / "vocab"
    run_pipeline(spec, run, log=lambda *_: None)
    rep = json.loads((run / "vocab" / "report.json").read_text())
    idmap = json.loads((run / "vocab" / "id_map.json").read_text())
    path, info = build_report(run)
    assert "Vocabulary extension" in info["sections"]
    text = _text(path.read_text())
    d = rep["domain"]
    assert (f"{len(idmap['new_tokens']):,} new tokens: vocabulary {idmap['base_vocab_size']:,} → "
            f"{idmap['vocab_size']:,}; domain text {d['chars_per_token_before']:.2f} → "
            f"{d['chars_per_token_after']:.2f} characters per token") in text
    assert d["chars_per_token_after"] > d["chars_per_token_before"]
    stage = next(s for s in load_run(run).stages if s.name == "vocab")
    assert stage.counts is None  # its output is a tokenizer, not documents: not in the funnel
