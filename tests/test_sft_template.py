"""Chat templates: HF-identical text, assistant-only loss masks, both span-finding paths."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from filters import bpe
from filters.chat_template import (
    ChatTemplate, Encoder, TemplateRenderError, add_special_tokens, load_template, template_messages,
)

WORDS = ("the cat sat on a mat while rain fell softly over quiet hills and rivers ran to sea "
         "über naïve 数据 清洗 😀 code: x = [1, 2]; print(x)").split()


def _text(rng: random.Random) -> str:
    n = rng.randint(1, 25)
    out = " ".join(rng.choice(WORDS) for _ in range(n))
    if rng.random() < 0.3:
        out = "\n" + out + "\n\n" + rng.choice(WORDS)
    if rng.random() < 0.2:
        out = "  " + out + " "
    return out


def random_conversation(rng: random.Random, tools_ok: bool = True) -> tuple[list[dict], list | None]:
    msgs: list[dict] = []
    if rng.random() < 0.4:
        msgs.append({"role": "system", "content": _text(rng)})
    tools = None
    for _ in range(rng.randint(1, 4)):
        msgs.append({"role": "user", "content": _text(rng)})
        if tools_ok and rng.random() < 0.3:
            tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
            msgs.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "lookup", "arguments": json.dumps({"q": _text(rng)})}}]})
            msgs.append({"role": "tool", "content": _text(rng)})
        msgs.append({"role": "assistant", "content": _text(rng)})
    return msgs, tools


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    tok = bpe.train_bpe([" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(200)], 600)
    for name in ("chatml", "llama3"):
        add_special_tokens(tok, load_template(name).special_tokens)
    return tok


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def expected_targets(msgs: list[dict], eot: str, render_call) -> list[str]:
    return [m["content"] + "".join(render_call(c) for c in m.get("tool_calls") or []) + eot
            for m in msgs if m["role"] == "assistant"]


def chatml_call(c) -> str:
    f = c["function"]
    args = f["arguments"] if isinstance(f["arguments"], str) else json.dumps(f["arguments"], ensure_ascii=False)
    return f'<tool_call>{{"name": {json.dumps(f["name"])}, "arguments": {args}}}</tool_call>'


def test_chatml_text_is_chatml():
    t = load_template("chatml")
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert t.render(msgs) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    assert t.render(msgs[:2], add_generation_prompt=True).endswith("<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_mask_decodes_to_assistant_turns_exactly(tokenizer, name):
    t = load_template(name)
    enc = Encoder(t, tokenizer)
    rng = random.Random(7)
    for _ in range(150):
        msgs, tools = random_conversation(rng, tools_ok=(name == "chatml"))
        tm = template_messages(msgs)
        e = enc.encode(tm, tools)
        assert e.ids.shape == e.mask.shape
        got = [tokenizer.decode(e.ids[a:b].tolist(), skip_special_tokens=False) for a, b in _runs(e.mask)]
        assert got == expected_targets(tm, t.end_of_turn, chatml_call)
        # Everything decodes back to the rendering: nothing lost between the pieces.
        assert tokenizer.decode(e.ids.tolist(), skip_special_tokens=False) == t.render(tm, tools)


def test_llama3_tool_turns_use_the_prefix_path(tokenizer):
    # The template tests the content before a tool call, so the marker path is refused and the
    # prefix renderings locate the turn; the target is the call and <|eot_id|>.
    t = load_template("llama3")
    msgs = template_messages([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": "{\"c\": 1}"}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
    ])
    assert t._marked_pieces(msgs, None, t.render(msgs), {1, 3}) is None
    e = Encoder(t, tokenizer).encode(msgs)
    got = [tokenizer.decode(e.ids[a:b].tolist(), skip_special_tokens=False) for a, b in _runs(e.mask)]
    assert got == ['{"name": "w", "parameters": {"c": 1}}<|eot_id|>', "Sunny.<|eot_id|>"]


def test_last_turn_only_and_literal_special_text(tokenizer):
    t = load_template("chatml")
    msgs = [{"role": "user", "content": "say <|im_end|> please"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "done"}]
    e = Encoder(t, tokenizer, last_turn_only=True).encode(msgs)
    assert [tokenizer.decode(e.ids[a:b].tolist(), skip_special_tokens=False) for a, b in _runs(e.mask)] == ["done<|im_end|>"]
    # The user's literal "<|im_end|>" is text, not the control token.
    end_id = tokenizer.token_to_id("<|im_end|>")
    assert int((e.ids == end_id).sum()) == 4


def test_stripping_template_falls_back_and_raise_exception_is_a_render_error(tokenizer):
    src = ("{% for m in messages %}{% if m.role == 'user' and loop.index0 % 2 == 1 %}"
           "{{ raise_exception('roles must alternate') }}{% endif %}"
           "<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    t = ChatTemplate(src, "trim", "<|im_end|>", ("<|im_start|>", "<|im_end|>"))
    msgs = [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "  yes  "}]
    e = Encoder(t, tokenizer).encode(msgs)
    assert [tokenizer.decode(e.ids[a:b].tolist(), skip_special_tokens=False) for a, b in _runs(e.mask)] == ["yes<|im_end|>"]
    with pytest.raises(TemplateRenderError, match="roles must alternate"):
        t.render([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}])


def test_tokenizer_config_template(tmp_path):
    cfg = {"chat_template": load_template("chatml").source, "eos_token": "<|im_end|>",
           "added_tokens_decoder": {"5": {"content": "<|im_start|>", "special": True}}}
    p = tmp_path / "tokenizer_config.json"
    p.write_text(json.dumps(cfg))
    t = load_template(tokenizer_config=str(p))
    assert t.end_of_turn == "<|im_end|>" and set(t.special_tokens) == {"<|im_start|>", "<|im_end|>"}
    assert t.sha256 == load_template("chatml").sha256


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_same_text_as_transformers_apply_chat_template(tokenizer, name):
    transformers = pytest.importorskip("transformers")
    t = load_template(name)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.__class__.from_str(tokenizer.to_str()),
                                              bos_token=t.variables.get("bos_token"), eos_token=bpe.DEFAULT_EOS)
    hf.chat_template = t.source
    rng = random.Random(3)
    for _ in range(60):
        msgs, tools = random_conversation(rng)
        tm = template_messages(msgs)
        for gen in (False, True):
            ours = t.render(tm, tools, add_generation_prompt=gen)
            theirs = hf.apply_chat_template(tm, tools=tools, tokenize=False, add_generation_prompt=gen)
            assert ours == theirs


def test_tokenizer_that_prefixes_every_call_is_refused():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from curate.errors import ConfigError
    from filters.chat_template import check_splittable

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.train_from_iterator(["a b ab ba"] * 10, trainers.BpeTrainer(vocab_size=50, special_tokens=["<unk>"],
                                                                   show_progress=False))
    with pytest.raises(ConfigError, match="adds text to every encode call"):
        check_splittable(tok)
