"""Grow a base model to an extended vocabulary with the vocab stage's ``id_map.json``.

Base ids keep their rows (old -> new is the identity on base ids); each new token's row of the
tied input/output embedding is the mean of the base rows of the pieces the base tokenizer
splits it into (``init_from``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from .model import GPT

ID_MAP_FORMAT = "curate-vocab/1"


def read_id_map(path: str | Path) -> dict:
    """The id map, checked: new ids run from ``base_vocab_size`` to ``vocab_size - 1`` once each."""
    m = json.loads(Path(path).read_text())
    if m.get("format") != ID_MAP_FORMAT:
        raise ValueError(f"{path}: not a vocabulary id map ({ID_MAP_FORMAT})")
    base, full = int(m["base_vocab_size"]), int(m["vocab_size"])
    ids = sorted(int(t["id"]) for t in m["new_tokens"])
    if ids != list(range(base, full)):
        raise ValueError(f"{path}: new token ids must be {base}..{full - 1}, each once")
    for t in m["new_tokens"]:
        bad = [i for i in t["init_from"] if not 0 <= int(i) < base]
        if not t["init_from"] or bad:
            raise ValueError(f"{path}: new token {t['id']} ({t['token']!r}) needs init_from base ids (< {base}), got {t['init_from']}")
    return m


def grow_vocab(model: GPT, id_map: dict, base_tokenizer_sha256: str | None = None) -> GPT:
    """A copy of ``model`` with the extended vocabulary of ``id_map``.

    Args:
        model: the base model (its vocabulary must be the map's base vocabulary).
        id_map: from :func:`read_id_map`.
        base_tokenizer_sha256: the base model's tokenizer hash, when known; it must match the map's.
    """
    base = int(id_map["base_vocab_size"])
    if model.config.vocab_size != base:
        raise ValueError(f"the base model has {model.config.vocab_size} ids, the id map's base tokenizer {base}")
    want = id_map.get("base_tokenizer_sha256")
    if base_tokenizer_sha256 and want and want != base_tokenizer_sha256:
        raise ValueError(f"the id map extends tokenizer {want[:12]}, the base model was trained with {base_tokenizer_sha256[:12]}")
    grown = GPT(replace(model.config, vocab_size=int(id_map["vocab_size"]))).to(model.wte.weight.device)
    state = {k: v for k, v in model.state_dict().items() if k != "wte.weight"}
    missing = grown.load_state_dict(state, strict=False).missing_keys
    if missing != ["wte.weight"]:
        raise RuntimeError(f"unexpected parameters after growing the vocabulary: {missing}")
    with torch.no_grad():
        old = model.wte.weight
        new = grown.wte.weight
        new[:base] = old
        for t in id_map["new_tokens"]:
            new[int(t["id"])] = old[torch.tensor([int(i) for i in t["init_from"]])].mean(dim=0)
    return grown
