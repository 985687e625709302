"""Core v2 seams: whole-pipeline validation, plugin stages (import path and entry point), a
stage reading several stages, the Python API, the reason registry and verification of
finished work before it is trusted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curate import reasons
from curate.errors import ConfigError, CurateError, StageStateError
from curate.pipeline import Pipeline
from curate.reasons import ReasonError
from curate.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "tests" / "plugins"


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))


@pytest.fixture()
def jsonl(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for k in range(2):
        rows = [{"id": f"f{k}-{i}", "text": "x" * i + " some words here"} for i in range(10)]
        (d / f"part{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _spec(inp: Path, **stages) -> dict:
    return {"pipeline": "t", "executor": "local", "workers": 1,
            "stages": {"read": {"input": {"paths": [str(inp)]}}, **stages}}


def _data(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.parquet"))}


def test_validate_catches_a_typo_in_the_last_stage_before_running_anything(tmp_path, jsonl):
    demo = yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())
    demo["stages"]["extract"]["input"] = {"paths": [str(jsonl)]}
    demo["stages"]["mix"]["config"] = {"mixtre": "manifests/mixtures/demo.yaml"}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(demo, sort_keys=False))
    out = subprocess.run([sys.executable, "-m", "curate.cli", "validate", str(p)], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 2
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "stage 'mix'" in err and "'mixtre'" in err and "did you mean 'mixture'" in err and str(p) in err
    # curate run validates first: nothing runs, nothing is written.
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="mixtre"):
        run_pipeline(p, run, executor="local", log=lambda *_: None)
    assert not run.exists()
    ok = subprocess.run([sys.executable, "-m", "curate.cli", "validate", str(ROOT / "manifests" / "demo.yaml")],
                        capture_output=True, text=True, cwd=tmp_path, timeout=60)
    # Relative paths resolve against the current directory.
    assert "config of stage 'mix'" in ok.stderr and "mixture file not found: manifests/mixtures/demo.yaml" in ok.stderr


@pytest.mark.parametrize("stages,match", [
    ({"a": {"type": "upper", "input": "b"}, "b": {"type": "upper", "input": "a"}}, r"cycle: (a -> b -> a|b -> a -> b)"),
    ({"a": {"type": "uper", "input": "read"}}, r"unknown stage type 'uper'; did you mean 'upper'"),
    ({"a": {"type": "curate_toy:Nope", "input": "read"}}, r"module 'curate_toy' has no 'Nope'"),
    ({"a": {"type": "no_such_pkg.mod:X", "input": "read"}}, r"cannot import 'no_such_pkg.mod'"),
    ({"a": {"type": "upper", "input": ["read", "read2"]}}, r"reads from 'read2', which is not a stage"),
    ({"a": {"type": "upper", "input": {"paths": ["x"]}}}, r"a map stage reads exactly one earlier stage"),
    ({"a": {"type": "upper", "input": "read", "config": {"min_char": 3}}}, r"unknown key 'min_char'.*did you mean 'min_chars'"),
])
def test_pipeline_errors_name_stage_and_key(jsonl, stages, match):
    with pytest.raises(ConfigError, match=match):
        run_pipeline(_spec(jsonl, **stages), jsonl.parent / "run", log=lambda *_: None)
    assert not (jsonl.parent / "run").exists()


def test_plugin_stages_by_import_path_and_entry_point(tmp_path, jsonl):
    a = run_pipeline(_spec(jsonl, up={"type": "curate_toy:Upper", "input": "read", "config": {"min_chars": 20}}),
                     tmp_path / "a", log=lambda *_: None)["up"]
    b = run_pipeline(_spec(jsonl, up={"type": "upper", "input": "read", "config": {"min_chars": 20}}),
                     tmp_path / "b", log=lambda *_: None)["up"]
    assert a["input_rows"] == 20 and a["reasons"] == {"upper.short": 8} and a["kept_rows"] == 12
    assert b["reasons"] == a["reasons"]
    assert _data(tmp_path / "a" / "up") == _data(tmp_path / "b" / "up")
    texts = pq.read_table(tmp_path / "a" / "up" / "part-00000.parquet").column("text").to_pylist()
    assert texts and all(t == t.upper() for t in texts)
    assert reasons.meaning("upper.short") == "the text is shorter than min_chars"


def test_undeclared_reason_is_refused(tmp_path, jsonl):
    # The worker's ReasonError reaches the user as one line naming stage, task and input.
    with pytest.raises(CurateError, match=r"stage 'up' task 0 \(input .*part-00000.parquet\): ReasonError: reject reason "
                                          r"'upper.nobody_declared' is not declared.*upper.short"):
        run_pipeline(_spec(jsonl, up={"type": "curate_toy:Undeclared", "input": "read"}), tmp_path / "r",
                     log=lambda *_: None)
    assert not list((tmp_path / "r" / "up").glob("part-*.parquet"))


def test_a_stage_reads_several_stages(tmp_path, jsonl):
    spec = _spec(jsonl, up={"type": "upper", "input": "read", "config": {"min_chars": 20}},
                 both={"type": "curate_toy:CountBoth", "input": ["read", "up"]})
    m = run_pipeline(spec, tmp_path / "r", log=lambda *_: None)["both"]
    assert m["counts"] == {"read": 20, "up": 12}
    assert json.loads((tmp_path / "r" / "both" / "counts.json").read_text()) == {"read": 20, "up": 12}
    # Declared out of order, run in dependency order.
    spec2 = {**spec, "stages": {"both": spec["stages"]["both"], "up": spec["stages"]["up"], "read": spec["stages"]["read"]}}
    logs: list[str] = []
    run_pipeline(spec2, tmp_path / "r", log=logs.append)
    assert [x.split("]")[0] for x in logs] == ["[read", "[up", "[both"]


def test_python_api_builds_the_same_pipeline(tmp_path, jsonl):
    p = Pipeline("t", executor="local", workers=1)
    p.add("read", input={"paths": [str(jsonl)]}).add("up", type="upper", input="read", config={"min_chars": 20})
    assert [s.name for s in p.validate()] == ["read", "up"]
    p.run(tmp_path / "api", log=lambda *_: None)
    y = tmp_path / "p.yaml"
    y.write_text(yaml.safe_dump(_spec(jsonl, up={"type": "upper", "input": "read", "config": {"min_chars": 20}})))
    Pipeline.from_yaml(y).run(tmp_path / "yaml", log=lambda *_: None)
    assert _data(tmp_path / "api") == _data(tmp_path / "yaml")
    with pytest.raises(ConfigError, match="already in the pipeline"):
        p.add("up")


def test_finished_work_is_verified_before_it_is_trusted(tmp_path, jsonl):
    spec = _spec(jsonl, up={"type": "upper", "input": "read", "config": {"min_chars": 20}})
    run = tmp_path / "r"
    run_pipeline(spec, run, log=lambda *_: None)
    good = _data(run)
    # Overwrite a finished shard (as a COPY TO would) and drop a stray file into the stage.
    target = run / "read" / "part-00001.parquet"
    pq.write_table(pq.read_table(run / "read" / "part-00000.parquet"), target)
    (run / "read" / "part-00009.parquet").write_bytes(b"stray")
    # A later stage alone refuses the changed input.
    with pytest.raises(StageStateError, match="input stage 'read' changed since it finished"):
        run_pipeline(spec, run, stages=["up"], log=lambda *_: None)
    logs: list[str] = []
    run_pipeline(spec, run, log=logs.append)
    text = "\n".join(logs)
    assert "part-00001.parquet changed" in text and "part-00009.parquet was added" in text
    assert "resuming: 1 of 2 shards already done" in text  # only the changed shard is redone
    assert "[up] already finished: skipped" in text  # same bytes again, so the next stage is still valid
    assert _data(run) == good
    (run / "up" / "_manifest.json").write_text("{}")
    logs.clear()
    run_pipeline(spec, run, log=logs.append)
    assert any("_manifest.json changed" in x for x in logs)
    assert json.loads((run / "up" / "_manifest.json").read_text())["stage"] == "up"


def test_reason_docs_are_generated_from_the_registry():
    doc = (ROOT / "docs" / "REASONS.md").read_text()
    assert doc == reasons.markdown(), "docs/REASONS.md is stale: python -m curate.reasons --markdown > docs/REASONS.md"
    reg = reasons.registry()
    for code in ("extract.corrupt_record", "langid.low_score", "quality.gopher_max_dup_5gram", "perplexity.tail",
                 "dedup.minhash_duplicate", "pii.too_many_hits", "mix.unassigned"):
        assert code in reg and reg[code][0]
    assert all(c.split(".")[0] != "quality" or not c.startswith("quality.ppl") for c in reg)
    with pytest.raises(ReasonError, match="declared twice"):
        reasons.declare("extract", {"empty": "something else"})


def test_extract_points_text_corpora_at_the_read_stage(tmp_path):
    d = tmp_path / "pq"
    d.mkdir()
    (d / "docs.parquet").write_bytes(b"PAR1")
    for inp, match in ((d, r"no WARC files or HTML folders under .*pq \(found docs.parquet; .*`read` stage"),
                       (d / "docs.parquet", r"extract reads WARC files and HTML folders, not docs.parquet")):
        spec = {"pipeline": "t", "executor": "local", "stages": {"extract": {"input": {"paths": [str(inp)]}}}}
        with pytest.raises(ConfigError, match=match):
            run_pipeline(spec, tmp_path / "run", log=lambda *_: None)
