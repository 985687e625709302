"""A small generated SFT data set in the layouts of ``../shared/sft`` (for ``make sft`` on a
fresh clone, and tests): Alpaca JSON arrays (English and Chinese), ShareGPT tool-call
conversations, self-instruct seed tasks, multi-turn ShareGPT chats, and two evaluation sets
(MT-Bench and self-instruct user-oriented layouts).

Everything is made from the word lists below with a seeded RNG (deterministic). Planted on
purpose: reformatted copies of evaluation prompts inside the Alpaca file (``CONTAMINATED``
lists where), near-duplicate prompts, and malformed records of every kind the readers reject
(bad JSON lines, empty fields, wrong role order, unknown roles, conversations not ending with
the assistant).

Usage: ``python -m samples.sftgen OUT_DIR``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

TOPICS = ("rivers", "bread", "bicycles", "volcanoes", "libraries", "gardens", "trains", "tea", "bridges",
          "owls", "glaciers", "markets", "lighthouses", "violins", "deserts", "coral reefs", "windmills",
          "chess", "honey bees", "maps")
VERBS = ("Describe", "Explain", "Summarise", "List three facts about", "Write a short poem about",
         "Give advice on", "Compare two kinds of", "Write a haiku about", "Suggest a name for a shop selling")
WORDS = ("the", "a", "of", "and", "to", "in", "is", "that", "it", "for", "on", "with", "as", "was", "by",
         "water", "light", "people", "small", "old", "new", "city", "time", "day", "way", "long", "many",
         "world", "made", "often", "near", "across", "under", "quiet", "bright", "early", "history", "local",
         "careful", "simple", "famous", "green", "north", "river", "stone", "wood", "summer", "winter")
HANZI = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"
DOMAINS = ("example.org", "example.com", "example.net")


def _sentence(rng: random.Random, n: tuple[int, int] = (8, 20)) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(*n))]
    return " ".join(words).capitalize() + rng.choice(".!.")


def _paragraph(rng: random.Random, k: tuple[int, int] = (2, 5)) -> str:
    return " ".join(_sentence(rng) for _ in range(rng.randint(*k)))


def _hanzi(rng: random.Random, n: tuple[int, int]) -> str:
    return "".join(rng.choice(HANZI) for _ in range(rng.randint(*n))) + "。"


def _prompt(rng: random.Random, k: int) -> str:
    return f"{rng.choice(VERBS)} {TOPICS[k % len(TOPICS)]} ({k})."


def eval_sets(rng: random.Random) -> tuple[list[dict], list[dict]]:
    mt = [{"question_id": 81 + i, "category": "writing",
           "turns": [f"Compose an engaging piece about {TOPICS[i % len(TOPICS)]} and the {rng.choice(WORDS)} "
                     f"{rng.choice(WORDS)} people who keep them, highlighting {rng.choice(WORDS)} details number {i}.",
                     "Rewrite your previous response in exactly four short sentences."]} for i in range(20)]
    uo = [{"id": f"user_oriented_task_{i}", "motivation_app": "Notes",
           "instruction": f"Turn the following list about {TOPICS[(i + 7) % len(TOPICS)]} into a friendly "
                          f"paragraph for a newsletter that goes out every {rng.choice(WORDS)} morning, item {i}.",
           "instances": [{"input": _sentence(rng), "output": _paragraph(rng)}]} for i in range(20)]
    return mt, uo


def generate(out: str | Path, seed: int = 0) -> dict:
    """Write the data set under ``out``; returns counts and the planted contamination."""
    rng = random.Random(seed)
    out = Path(out)
    for sub in ("llama_factory", "alpaca", "fastchat", "self_instruct"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    mt, uo = eval_sets(rng)
    (out / "fastchat" / "mt_bench_question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mt))
    (out / "self_instruct" / "user_oriented_instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in uo))

    alpaca = []
    for k in range(400):
        rec = {"instruction": _prompt(rng, k), "input": _sentence(rng) if rng.random() < 0.3 else "",
               "output": _paragraph(rng)}
        alpaca.append(rec)
    for k in range(0, 30, 3):  # near-duplicate prompts
        alpaca.append({"instruction": alpaca[k]["instruction"].upper(), "input": alpaca[k]["input"],
                       "output": _paragraph(rng)})
    contaminated = {}
    for j, (ev, text) in enumerate([(f"mt_bench:{r['question_id']}", r["turns"][0]) for r in mt[:4]]
                                   + [(f"user_oriented:{r['id']}", r["instruction"]) for r in uo[:4]]):
        variant = ("Question: " + text.upper()) if j % 2 else ("### Task\n" + text.replace(", ", "\n"))
        contaminated[len(alpaca)] = ev
        alpaca.append({"instruction": variant, "input": "", "output": _paragraph(rng)})
    alpaca += [{"instruction": "Say hello.", "input": "", "output": "  "},  # empty output
               {"instruction": "", "input": "x", "output": "y"},  # empty instruction
               {"input": "no instruction", "output": "z"}]  # missing field -> unknown format? no: missing
    (out / "llama_factory" / "alpaca_en_demo.json").write_text(json.dumps(alpaca, ensure_ascii=False, indent=1))

    zh = [{"instruction": _hanzi(rng, (8, 20)), "input": "", "output": _hanzi(rng, (30, 120))} for _ in range(200)]
    (out / "llama_factory" / "alpaca_zh_demo.json").write_text(json.dumps(zh, ensure_ascii=False, indent=1))

    tools = json.dumps([{"name": "lookup_fact", "description": "Look up a fact",
                         "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}}}])
    glaive = []
    for k in range(120):
        topic = TOPICS[k % len(TOPICS)]
        conv = [{"from": "human", "value": f"Can you find a fact about {topic}? ({k})"},
                {"from": "function_call", "value": json.dumps({"name": "lookup_fact", "arguments": {"topic": topic}})},
                {"from": "observation", "value": json.dumps({"fact": _sentence(rng)})},
                {"from": "gpt", "value": _paragraph(rng, (1, 2))}]
        if rng.random() < 0.4:
            conv += [{"from": "human", "value": _sentence(rng)}, {"from": "gpt", "value": _paragraph(rng, (1, 3))}]
        glaive.append({"conversations": conv, "tools": tools})
    glaive += [
        {"conversations": [{"from": "gpt", "value": "I start."}, {"from": "human", "value": "Hm."}], "tools": tools},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "beep"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey"},
                           {"from": "human", "value": "Bye"}]},
        {"conversations": [{"from": "human", "value": "Call"}, {"from": "function_call", "value": "{oops"}]},
    ]
    (out / "llama_factory" / "glaive_toolcall_en_demo.json").write_text(json.dumps(glaive, indent=1))

    lines = []
    for k in range(60):
        lines.append(json.dumps({"id": f"seed_task_{k}", "name": f"task_{k}", "instruction": _prompt(rng, 1000 + k),
                                 "instances": [{"input": "", "output": _paragraph(rng, (1, 3))}],
                                 "is_classification": False}))
    lines.insert(10, '{"id": "seed_task_bad", "instruction": "unterminated')
    (out / "alpaca" / "seed_tasks.jsonl").write_text("\n".join(lines) + "\n")

    chats = []
    for k in range(150):
        conv = []
        for _ in range(rng.randint(1, 3)):
            conv += [{"from": "human", "value": _sentence(rng, (4, 14))}, {"from": "gpt", "value": _paragraph(rng)}]
        chats.append({"id": f"identity_{k}", "conversations": conv})
    (out / "fastchat" / "dummy_conversation.json").write_text(json.dumps(chats, indent=1))
    return {"contaminated": contaminated, "alpaca_en": len(alpaca)}


def write_unigram_arpa(texts: list[str], path: str | Path) -> None:
    """A tiny KenLM model (ARPA, add-one unigrams plus the one bigram KenLM insists on) of
    ``texts``, prepared as the perplexity scorer prepares text: for tests and benchmarks that
    need a model without running ``lmplz``."""
    from collections import Counter
    import math

    from filters.kenlm_lm import prepare_lines

    counts: Counter = Counter()
    for t in texts:
        for ln in prepare_lines(t):
            counts.update(ln.split())
            counts["</s>"] += 1
    total = sum(counts.values()) + len(counts) + 1
    lines = ["\\data\\", f"ngram 1={len(counts) + 2}", "ngram 2=1", "", "\\1-grams:",
             f"{math.log10(1 / total):.6f}\t<unk>\t0", "-99\t<s>\t0"]
    lines += [f"{math.log10((c + 1) / total):.6f}\t{w}\t0" for w, c in sorted(counts.items())]
    lines += ["", "\\2-grams:", "-1.0\t<s> </s>", "", "\\end\\", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m samples.sftgen OUT_DIR", file=sys.stderr)
        return 2
    info = generate(argv[0])
    print(f"wrote the generated SFT set to {argv[0]} ({len(info['contaminated'])} planted contaminated prompts)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
