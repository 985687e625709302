"""kill -9 in every phase of every global stage, then a rerun: same bytes, finished work not redone.

The phase engine's fault hook (``CURATE_FAULT=kill:<stage>:<phase>:<k>``) makes the process
SIGKILL itself just before the k-th result of that phase is recorded, i.e. after the task's
files were written but before its marker: the hardest moment for a resume.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curate.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[1]

PHASES = {
    "train-lm": ["text", "lmplz-en", "lmplz-zh"],
    "perplexity": ["score", "bucket"],
    "dedup": ["signature", "bucket", "verify", "components", "filter"],
    "mix": ["tokenizer", "tokenise", "pack"],
}
# (stage, phase, k): k results of that phase are recorded before the kill.
CASES = [
    ("train-lm", "text", 0),
    ("train-lm", "text", 3),
    ("train-lm", "lmplz-en", 0),
    ("train-lm", "lmplz-zh", 0),
    ("perplexity", "score", 2),
    ("perplexity", "bucket", 0),
    ("perplexity", "bucket", 4),
    ("dedup", "signature", 3),
    ("dedup", "bucket", 0),
    ("dedup", "verify", 0),
    ("dedup", "components", 0),
    ("dedup", "filter", 5),
    ("mix", "tokenizer", 0),
    ("mix", "tokenise", 2),
    ("mix", "pack", 0),
]


def _pipeline(sample: Path) -> dict:
    demo = yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())
    demo["executor"], demo["workers"] = "local", 1
    demo["stages"]["extract"]["input"] = {"paths": [str(sample)]}
    demo["stages"]["mix"]["config"]["mixture"] = str(ROOT / "manifests" / "mixtures" / "demo.yaml")
    return demo


def _stage_bytes(d: Path) -> dict[str, bytes]:
    """Every data file of a stage (manifests and markers hold timings, so they are left out)."""
    skip = {"_manifest.json", "_SUCCESS"}
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name not in skip and p.relative_to(d).parts[0] not in ("_shards", "_work")
    }


@pytest.fixture(scope="module")
def reference(sample_corpus, tmp_path_factory):
    pytest.importorskip("kenlm")
    from stages.train_lm import find_tool

    try:
        find_tool("lmplz")
    except Exception:
        pytest.skip("lmplz is not built (make lmplz)")
    base = tmp_path_factory.mktemp("kills")
    spec = _pipeline(sample_corpus)
    (base / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    run_pipeline(spec, base / "ref", log=lambda *_: None)
    return base


def _run_cli(base: Path, run: Path, stage: str, fault: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, CURATE_NO_PROGRESS="1")
    env.pop("CURATE_FAULT", None)
    if fault:
        env["CURATE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "curate.cli", "run", str(base / "pipeline.yaml"), "--run", str(run), "--stage", stage],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )


@pytest.mark.parametrize("stage,phase,k", CASES, ids=[f"{s}:{p}:{k}" for s, p, k in CASES])
def test_kill_in_phase_resumes_to_identical_bytes(reference, tmp_path, stage, phase, k):
    ref = reference / "ref"
    run = tmp_path / "run"
    shutil.copytree(ref, run)  # the finished stages before this one are its inputs
    order = list(_pipeline(Path("x"))["stages"])
    for later in order[order.index(stage):]:
        shutil.rmtree(run / later)

    killed = _run_cli(reference, run, stage, f"kill:{stage}:{phase}:{k}")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert not (run / stage / "_SUCCESS").exists()
    marker_dir = run / stage / "_work" / phase
    recorded = sorted(marker_dir.glob("*.json")) if marker_dir.is_dir() else []
    if phase.startswith("lmplz") or phase in ("components", "tokenizer", "pack"):
        assert not (run / stage / "_work" / f"{phase}.json").exists()
    else:
        assert len(recorded) == k

    again = _run_cli(reference, run, stage, None)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _stage_bytes(run / stage) == _stage_bytes(ref / stage)
    m = json.loads((run / stage / "_manifest.json").read_text())
    resumed = m.get("resumed", {})
    ref_m = json.loads((ref / stage / "_manifest.json").read_text())
    assert set(ref_m["timings"]["phases"]) == set(PHASES[stage])
    # Every phase that finished before the kill was skipped; the killed phase kept its k tasks.
    for p in PHASES[stage][: PHASES[stage].index(phase)]:
        assert resumed.get(p, 0) > 0, (p, resumed, again.stdout)
    assert resumed.get(phase, 0) == k, (resumed, again.stdout)
    assert m["conservation"] == ref_m["conservation"]


def test_train_lm_resumes_after_a_kill_inside_lmplz(reference, tmp_path):
    """What a kill (or a full disk) in the middle of lmplz leaves: its sort folder with
    temporary files, a partial ARPA file, a partial binary, and a ``*.tmp`` folder (the name
    an older version used for the sort folder, which made every rerun fail with
    IsADirectoryError). The rerun clears them and ends with the same models."""
    ref = reference / "ref"
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    order = list(_pipeline(Path("x"))["stages"])
    for later in order[order.index("train-lm"):]:
        shutil.rmtree(run / later)
    killed = _run_cli(reference, run, "train-lm", "kill:train-lm:lmplz-en:0")
    assert killed.returncode == -signal.SIGKILL
    work = run / "train-lm" / "_work"
    for d in ("en.sort", "en.tmp"):
        (work / d).mkdir(exist_ok=True)
        (work / d / "lmplz-sort-0").write_bytes(b"\0" * 4096)
    (work / "en.arpa").write_text("\\data\\\nngram 1=3\n")  # cut short
    (run / "train-lm" / "models" / "en.bin.partial").write_bytes(b"partial")
    again = _run_cli(reference, run, "train-lm", None)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _stage_bytes(run / "train-lm") == _stage_bytes(ref / "train-lm")
    assert json.loads((run / "train-lm" / "_manifest.json").read_text())["resumed"]["text"] == 7
