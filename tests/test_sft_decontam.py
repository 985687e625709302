"""Decontamination: reformatted copies of evaluation prompts are caught with the right id."""

from __future__ import annotations

import json
import random
import re

import pytest

from filters.decontam import Decontaminator, EvalText, load_eval_texts, tokens
from filters.sft_formats import normalize

EVALS = [
    EvalText("set:1", "Compose an engaging travel blog post about a recent trip to Hawaii, highlighting "
                      "cultural experiences and must-see attractions."),
    EvalText("set:2", "Explain the difference between a list and a tuple in Python, with two short examples."),
    EvalText("set:3", "Prove the Pythagorean theorem."),  # short: 4 tokens, below min_tokens
    EvalText("set:4", "How can we reverse this process?"),  # short: 6 tokens
    EvalText("set:5", "写一首关于秋天的诗，要求押韵，并且每句七个字。"),
]


def variants(text: str, rng: random.Random) -> list[str]:
    words = text.split()
    return [
        text,
        text.upper(),
        "Question: " + text + "\nAnswer step by step.",
        "### Instruction\n\n" + "\n".join(words),  # re-flowed, Markdown header
        re.sub(r"[,.!?\-]", " ", text.lower()),  # punctuation dropped
        "Here is my task for you. " + text.replace(" ", "  ") + " Thanks!",
    ]


def test_tokens_normalise_case_punctuation_width_and_cjk():
    assert tokens("Hello, WORLD!  ｆｕｌｌ-width") == ["hello", "world", "full", "width"]
    assert tokens("数据清洗ok") == ["数", "据", "清", "洗", "ok"]


def test_reformatted_copies_match_and_short_rule():
    d = Decontaminator(EVALS, n=13)
    rng = random.Random(0)
    assert d.match(variants(EVALS[0].text, rng)[1:2]) == "set:1"
    for ev in (EVALS[0], EVALS[1], EVALS[4]):
        for v in variants(ev.text, rng):
            assert d.match([v]) == ev.eval_id, v
    # Short prompt: caught when it is most of the turn, not inside long unrelated text.
    assert d.match(["how can we REVERSE this process"]) == "set:4"
    assert d.match(["Q: How can we reverse this process? Be brief."]) == "set:4"
    long = "In chemistry class we asked: how can we reverse this process? " + "The answer involves many steps " * 5
    assert d.match([long]) is None
    assert d.too_short == 1 and d.match(["Prove the Pythagorean theorem."]) is None
    # Twelve consecutive words of a 13-gram rule are not enough.
    assert d.match([" ".join(EVALS[0].text.split()[:12])]) is None


def test_configurable_n():
    d = Decontaminator(EVALS, n=8)
    assert d.match([" ".join(EVALS[1].text.split()[3:11])]) == "set:2"


@pytest.fixture(scope="module")
def shared_evals(shared_dir):
    sft = shared_dir / "sft"
    return (load_eval_texts(sft / "fastchat" / "mt_bench_question.jsonl", "mt_bench")
            + load_eval_texts(sft / "self_instruct" / "user_oriented_instructions.jsonl", "user_oriented"))


def test_planted_copies_in_alpaca_all_caught_no_false_rejections(shared_dir, shared_evals):
    d = Decontaminator(shared_evals)
    data = json.loads((shared_dir / "sft" / "llama_factory" / "alpaca_en_demo.json").read_text())
    rng = random.Random(11)
    # Evaluation texts that identify one item (duplicated texts would report the first item).
    first_id: dict[tuple, set] = {}
    for ev in shared_evals:
        first_id.setdefault(tuple(tokens(ev.text)), set()).add(ev.eval_id)
    candidates = [ev for ev in shared_evals if len(first_id[tuple(tokens(ev.text))]) == 1
                  and len(tokens(ev.text)) >= 13]
    planted = rng.sample(candidates, 40)
    records = [dict(r) for r in data]
    expect = {}
    for k, ev in enumerate(planted):
        i = rng.randrange(len(records))
        while i in expect:
            i = rng.randrange(len(records))
        v = rng.choice(variants(ev.text, rng))
        records[i] = {"instruction": v if k % 2 else "Please help.", "input": "" if k % 2 else v,
                      "output": records[i]["output"]}
        expect[i] = ev.eval_id
    got = {}
    for i, r in enumerate(records):
        msgs = normalize(r).messages
        m = d.match([x["content"] for x in msgs if x["role"] in ("system", "user")])
        if m:
            got[i] = m
    assert got == expect
