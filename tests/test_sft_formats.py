"""SFT record formats: every format normalised to one schema; malformed records get reasons."""

from __future__ import annotations

import json

import pytest

from curate import reasons
from filters import sft_formats as sf


def conv(rec, fmt="auto"):
    return sf.normalize(rec, fmt).messages


def code(rec, fmt="auto"):
    with pytest.raises(sf.FormatReject) as e:
        sf.normalize(rec, fmt)
    assert reasons.meaning(e.value.code), e.value.code  # declared in the registry
    return e.value.code.split(".", 1)[1]


def test_alpaca_with_input_system_history():
    rec = {"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "system": "Be terse.",
           "history": [["Hi", "Hey"]]}
    assert conv(rec) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hey"},
        {"role": "user", "content": "Translate.\n\nBonjour"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert conv({"instruction": "Say hi", "input": "", "output": "hi"}) == [
        {"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]


def test_dolly_self_instruct_prompt_response():
    c = sf.normalize({"instruction": "Q?", "context": "ctx", "response": "A", "category": "open_qa"})
    assert c.messages == [{"role": "user", "content": "Q?\n\nctx"}, {"role": "assistant", "content": "A"}]
    assert c.meta == {"category": "open_qa"}
    assert conv({"instruction": "I", "instances": [{"input": "", "output": "o1"}, {"input": "x", "output": "o2"}]}) == [
        {"role": "user", "content": "I"}, {"role": "assistant", "content": "o1"},
        {"role": "user", "content": "I\n\nx"}, {"role": "assistant", "content": "o2"}]
    assert conv({"prompt": "p", "completion": "c"}) == [
        {"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]


def test_openai_messages_with_tools():
    rec = {
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "20C"},
            {"role": "assistant", "content": "It is 20C."},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
    }
    c = sf.normalize(rec)
    assert c.messages[0] == {"role": "system", "content": "Use tools."}
    assert c.messages[2] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]}
    assert c.messages[3] == {"role": "tool", "content": "20C", "tool_call_id": "c1"}
    assert c.tools == rec["tools"]


def test_sharegpt_glaive_style():
    rec = {
        "conversations": [
            {"from": "human", "value": "Find a recipe"},
            {"from": "function_call", "value": json.dumps({"name": "search", "arguments": {"q": "rice"}})},
            {"from": "observation", "value": "{\"r\": 1}"},
            {"from": "gpt", "value": "Found one."},
        ],
        "tools": json.dumps([{"name": "search", "parameters": {}}]),
    }
    c = sf.normalize(rec)
    assert [m["role"] for m in c.messages] == ["user", "assistant", "tool", "assistant"]
    assert c.messages[1]["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"q": "rice"}'}
    assert c.tools == [{"type": "function", "function": {"name": "search", "parameters": {}}}]


@pytest.mark.parametrize("rec, expected", [
    ([1, 2], "not_object"),
    ({"foo": "bar"}, "unknown_format"),
    ({"instruction": "x"}, "missing_field"),
    ({"instruction": "  ", "output": "y"}, "empty_field"),
    ({"instruction": "x", "output": 3}, "bad_type"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "unknown_role"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "unknown_role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                   {"role": "assistant", "content": "c"}]}, "bad_role_order"),
    ({"messages": [{"role": "assistant", "content": "a"}]}, "bad_role_order"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "c"}]}, "bad_role_order"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "tool", "content": "t"}, {"role": "assistant", "content": "c"}]}, "bad_role_order"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                   {"role": "user", "content": "c"}]}, "no_assistant_end"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}, "empty_field"),
    ({"messages": []}, "empty_field"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{not json"}]},
     "bad_tool_call"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                   {"role": "assistant", "content": "x"}]}, "unsupported_content"),
])
def test_malformed_records(rec, expected):
    assert code(rec) == expected


def test_format_given_explicitly_and_unknown_format():
    # An explicit format reads its own fields even when auto-detection would pick another.
    assert code({"instruction": "a", "response": "b"}, "alpaca") == "missing_field"
    with pytest.raises(ValueError, match="unknown SFT format"):
        sf.normalize({}, "csv")


def test_shared_files_normalise(shared_dir):
    sft = shared_dir / "sft"
    for name, n in (("llama_factory/alpaca_en_demo.json", 999), ("llama_factory/glaive_toolcall_en_demo.json", 300),
                    ("fastchat/dummy_conversation.json", 500)):
        data = json.loads((sft / name).read_text())
        convs = [sf.normalize(r) for r in data]
        assert len(convs) == n
        assert all(c.messages[-1]["role"] == "assistant" for c in convs)
