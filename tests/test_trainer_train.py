"""Training on the demo mixture: a killed run resumes to the same curve and weights; a loss spike
is rolled back and its batch skipped; warm-up + cosine schedule; config errors are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trainer.model import read_checkpoint  # noqa: E402
from trainer.train import TrainConfig, TrainError, load_config, lr_at, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("tokens_per_s", "mfu")


def cfg(mix: Path, out: Path, **over) -> dict:
    c = dict(data=str(mix), out=str(out), n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4,
             max_steps=30, eval_every=10, ckpt_every=10, eval_tokens=1000, threads=1, progress=False,
             lr=1e-2, warmup_steps=3, dropout=0.1)
    c.update(over)
    return c


def curve(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields."""
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


def test_killed_run_resumes_bit_identical(demo_run, tmp_path):
    mix = demo_run / "mix"
    ref = tmp_path / "ref"
    train(cfg(mix, ref), log=lambda *_: None)

    killed = tmp_path / "killed"
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(json.dumps(cfg(mix, killed)))  # JSON is YAML
    env = {**os.environ, "CURATE_NO_PROGRESS": "1"}
    p = subprocess.run([sys.executable, "-m", "trainer.train", "--config", str(cfg_file), "--fault-kill-at-step", "15"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr  # SIGKILL: no clean-up ran
    assert read_checkpoint(killed / "ckpt.pt")["state"]["step"] == 10
    assert max(r["step"] for r in curve(killed)) == 15  # steps 11-15 were logged, then lost with the process

    logs = []
    train(cfg(mix, killed), log=logs.append)
    assert any("resumed" in m and "step 10" in m for m in logs)
    assert curve(killed) == curve(ref)
    a, b = read_checkpoint(ref / "ckpt.pt"), read_checkpoint(killed / "ckpt.pt")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["state"] == b["state"]


def test_loss_spike_rolled_back_and_batch_skipped(demo_run, tmp_path):
    mix = demo_run / "mix"
    spike = dict(dropout=0.0, max_steps=40, spike_window=10, spike_factor=2.0)
    clean = train(cfg(mix, tmp_path / "clean", **spike), log=lambda *_: None)
    assert clean["spikes"] == []  # the same factor raises no false alarm on clean data

    logs = []
    s = train(cfg(mix, tmp_path / "spiked", fault_spike_batches=[34], **spike), log=logs.append)
    (ev,) = s["spikes"]
    assert ev["batches"] == [34] and ev["step"] == 35 and ev["rolled_back_to"] == 30
    assert ev["loss"] > 2.0 * ev["median"]
    shares = ev["sources"]["34"]
    assert shares and abs(sum(shares.values()) - 1) < 1e-3  # the batch's sources, from the sidecar
    assert any("loss spike at step 35" in m and "skipping batches [34]" in m for m in logs)
    assert s["skipped_batches"] == [34]

    steps = [r for r in curve(tmp_path / "spiked") if r["event"] == "train"]
    assert [r["step"] for r in steps] == list(range(1, 41))
    assert all(34 not in r["batches"] for r in steps)
    ref = [r for r in curve(tmp_path / "clean") if r["event"] == "train"]
    # steps 31-34 were replayed from the step-30 checkpoint: the same as the clean run
    assert steps[:34] == ref[:34]
    assert steps[34]["batches"] == [35] and steps[34]["loss"] < 2.0 * ev["median"]


def test_schedule_warmup_then_cosine():
    c = TrainConfig(data="d", out="o", lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(c, 0) == pytest.approx(0.1) and lr_at(c, 9) == pytest.approx(1.0)
    assert lr_at(c, 60) == pytest.approx(0.55)  # half way down the cosine
    assert lr_at(c, 110) == pytest.approx(0.1)
    assert all(lr_at(c, i) >= lr_at(c, i + 1) for i in range(10, 110))


def test_config_errors_are_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("data: x\nout: y\nn_layers: 3\n")
    with pytest.raises(TrainError, match=r"c.yaml: n_layers: Extra inputs are not permitted"):
        load_config(str(p), {})
    with pytest.raises(TrainError, match="batch_size"):
        load_config(None, {"data": "x", "out": "y", "batch_size": 0})


def test_resume_refuses_a_changed_config(demo_run, tmp_path):
    c = cfg(demo_run / "mix", tmp_path / "r", max_steps=2, ckpt_every=2, eval_every=2)
    train(c, log=lambda *_: None)
    with pytest.raises(TrainError, match=r"written with lr=0.01, this run has 0.02; use another --out or --no-resume"):
        train({**c, "lr": 2e-2}, log=lambda *_: None)
    assert train({**c, "max_steps": 3}, log=lambda *_: None)["steps"] == 3  # extending a run is allowed
