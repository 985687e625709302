"""The ablation's clean held-out set: documents an arm trained on are dropped from it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from trainer.ablation import clean_heldout  # noqa: E402
from trainer.data import read_val_sets  # noqa: E402


def test_clean_heldout_drops_what_an_arm_trained_on(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run / "mix", run / "mix")
    shutil.copytree(demo_run / "mix", run / "leaky")
    meta = json.loads((run / "mix" / "meta.json").read_text())
    dtype, eos = np.dtype(meta["dtype"]), meta["tokenizer"]["eos_id"]
    val = read_val_sets(run / "mix")
    doc = val["wiki"][: int(np.flatnonzero(val["wiki"] == eos)[0]) + 1]
    with open(run / "leaky" / meta["train"]["files"][0]["path"], "ab") as f:  # the leaky arm trains on it
        f.write(doc.astype(dtype).tobytes())

    res = clean_heldout(run, run / "held", [run / "mix", run / "leaky"])
    assert res["per_arm"]["mix"]["overlapping"] == 0 and res["per_arm"]["leaky"]["overlapping"] == 1
    assert res["dropped"] == 1
    held = read_val_sets(run / "held")
    assert set(held) == set(val)
    assert len(held["wiki"]) == len(val["wiki"]) - len(doc)
    assert np.array_equal(held["wiki"], val["wiki"][len(doc):])
    assert all(np.array_equal(held[s], val[s]) for s in val if s != "wiki")
    assert res["kept_tokens"] == sum(len(v) for v in held.values())
