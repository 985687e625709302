"""Instruction and chat records in the formats people publish, normalised into one schema.

Every supported format becomes a :class:`Conversation`: a list of turns
``{role, content, name?, tool_calls?, tool_call_id?}`` with roles ``system``, ``user``,
``assistant`` and ``tool`` (OpenAI's vocabulary, which HF chat templates read), plus the tool
schemas offered to the model (``tools``, OpenAI/HF shape ``[{"type": "function",
"function": {...}}]``). Tool calls are ``{"id"?, "type": "function", "function": {"name",
"arguments"}}`` with ``arguments`` a JSON string, as OpenAI writes them.

Formats (``FORMATS``; ``auto`` picks by the keys of each record):

* ``alpaca``: ``instruction``, optional ``input`` (appended to the instruction after a blank
  line), ``output``; optional ``system`` and ``history`` (``[[user, assistant], ...]``
  exchanges before the instruction).
* ``dolly``: ``instruction``, optional ``context`` (appended after a blank line), ``response``,
  ``category``.
* ``self_instruct``: ``instruction`` and ``instances`` (``[{input, output}]``), as the
  self-instruct seed tasks; each instance is one exchange.
* ``messages``: OpenAI chat ``messages`` (``system``/``developer``/``user``/``assistant``/
  ``tool``/``function``, ``tool_calls``, content as a string or a list of text parts),
  optional ``tools``.
* ``sharegpt``: ``conversations`` of ``{from, value}`` with ``human``/``gpt``/``system``/
  ``function_call``/``observation`` (LLaMA-Factory's glaive tool-call files), optional
  ``system`` and ``tools`` (a JSON string or a list).
* ``prompt_response``: ``prompt`` and ``response`` (or ``completion``), optional ``system``.

A record that cannot become a valid conversation raises :class:`FormatReject` with a declared
reason code (``sft-read.<code>``) and a one-line detail. A valid conversation is: an optional
system turn first, then a user turn, then turns where a user turn follows an assistant turn
without tool calls, tool turns follow an assistant turn with tool calls (or another tool turn),
an assistant turn follows a user or tool turn; and the last turn is the assistant's. Text
content must be non-empty after stripping whitespace (an assistant turn with tool calls may
have empty content). The content itself is kept as given (not stripped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from curate.reasons import declare

STAGE = "sft-read"
REASONS = declare(STAGE, {
    "bad_record": "the reader could not parse the record (malformed JSON line or element)",
    "not_object": "the record is not a JSON object",
    "unknown_format": "the record has none of the fields of a known SFT format",
    "missing_field": "a required field of the record's format is absent",
    "empty_field": "a required field or turn is empty (or only whitespace)",
    "bad_type": "a field has the wrong type (e.g. a turn's content is not text)",
    "unknown_role": "a turn has a role (or ShareGPT 'from') that is not known",
    "bad_role_order": "turns are out of order (system not first, two user turns in a row, a tool turn without a call, ...)",
    "no_assistant_end": "the conversation does not end with an assistant turn",
    "bad_tool_call": "a tool call is not a JSON object with a function name",
    "unsupported_content": "a turn's content has non-text parts (images, audio)",
})

FORMATS = ("auto", "alpaca", "dolly", "self_instruct", "messages", "sharegpt", "prompt_response")
ROLES = ("system", "user", "assistant", "tool")

_OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                 "tool": "tool", "function": "tool"}
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "system": "system", "function_call": "assistant",
                   "observation": "tool", "tool": "tool"}


class FormatReject(ValueError):
    """A record that is not a valid conversation: ``code`` is a full reason code."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass
class Conversation:
    """One normalised example.

    Attributes:
        messages: turns as dicts with ``role`` and ``content`` and, where present, ``name``,
            ``tool_calls`` and ``tool_call_id`` (absent keys are left out, never None).
        tools: tool schemas offered to the model, or None.
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _reject(code: str, detail: str) -> FormatReject:
    return FormatReject(REASONS[code], detail)


def _text(rec: dict, key: str, required: bool = True, where: str = "") -> str | None:
    """A string field: missing/empty/non-string required fields raise FormatReject."""
    where = where or repr(key)
    if key not in rec or rec[key] is None:
        if required:
            raise _reject("missing_field", f"no field {where}")
        return None
    v = rec[key]
    if not isinstance(v, str):
        raise _reject("bad_type", f"field {where} is {type(v).__name__}, not a string")
    if not v.strip():
        if required:
            raise _reject("empty_field", f"field {where} is empty")
        return None
    return v


def _join(first: str, second: str | None) -> str:
    return first if not second else f"{first}\n\n{second}"


def detect_format(rec: dict) -> str:
    """The format of one record, by its keys (``unknown_format`` when none fits)."""
    if "messages" in rec:
        return "messages"
    if "conversations" in rec:
        return "sharegpt"
    if "instruction" in rec:
        if "instances" in rec:
            return "self_instruct"
        if "response" in rec or "context" in rec:
            return "dolly"
        return "alpaca"
    if "prompt" in rec:
        return "prompt_response"
    raise _reject("unknown_format", f"no known SFT fields among {sorted(rec)[:8]}")


def normalize(rec: Any, fmt: str = "auto") -> Conversation:
    """Normalise one record of format ``fmt`` (see the module docstring).

    Raises:
        FormatReject: the record is not a valid conversation (its ``code`` says why).
        ValueError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown SFT format {fmt!r}; known: {', '.join(FORMATS)}")
    if not isinstance(rec, dict):
        raise _reject("not_object", f"record is {type(rec).__name__}, not an object")
    if fmt == "auto":
        fmt = detect_format(rec)
    conv = _PARSERS[fmt](rec)
    validate(conv.messages)
    return conv


def _system(rec: dict) -> list[dict]:
    s = _text(rec, "system", required=False)
    return [{"role": "system", "content": s}] if s is not None else []


def _alpaca(rec: dict) -> Conversation:
    msgs = _system(rec)
    hist = rec.get("history")
    if hist is not None:
        if not isinstance(hist, list):
            raise _reject("bad_type", "field 'history' is not a list")
        for k, pair in enumerate(hist):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise _reject("bad_type", f"history[{k}] is not a [user, assistant] pair")
            for role, v, j in (("user", pair[0], 0), ("assistant", pair[1], 1)):
                if not isinstance(v, str):
                    raise _reject("bad_type", f"history[{k}][{j}] is not a string")
                if not v.strip():
                    raise _reject("empty_field", f"history[{k}][{j}] is empty")
                msgs.append({"role": role, "content": v})
    prompt = _join(_text(rec, "instruction"), _text(rec, "input", required=False))
    msgs.append({"role": "user", "content": prompt})
    msgs.append({"role": "assistant", "content": _text(rec, "output")})
    return Conversation(msgs)


def _dolly(rec: dict) -> Conversation:
    prompt = _join(_text(rec, "instruction"), _text(rec, "context", required=False))
    msgs = _system(rec) + [{"role": "user", "content": prompt},
                           {"role": "assistant", "content": _text(rec, "response")}]
    cat = rec.get("category")
    return Conversation(msgs, meta={"category": cat} if isinstance(cat, str) else {})


def _self_instruct(rec: dict) -> Conversation:
    instruction = _text(rec, "instruction")
    inst = rec.get("instances")
    if not isinstance(inst, list):
        raise _reject("bad_type" if inst is not None else "missing_field", "field 'instances' is not a list")
    if not inst:
        raise _reject("empty_field", "field 'instances' is empty")
    msgs = []
    for k, x in enumerate(inst):
        if not isinstance(x, dict):
            raise _reject("bad_type", f"instances[{k}] is not an object")
        msgs.append({"role": "user", "content": _join(instruction, _text(x, "input", False, f"instances[{k}].input"))})
        msgs.append({"role": "assistant", "content": _text(x, "output", True, f"instances[{k}].output")})
    return Conversation(msgs)


def _prompt_response(rec: dict) -> Conversation:
    key = "response" if "response" in rec or "completion" not in rec else "completion"
    msgs = _system(rec) + [{"role": "user", "content": _text(rec, "prompt")},
                           {"role": "assistant", "content": _text(rec, key)}]
    return Conversation(msgs)


def _content(v: Any, where: str) -> str:
    """A turn's content: a string, or a list of text parts joined (OpenAI's content parts)."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, list):
        parts = []
        for k, p in enumerate(v):
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            elif isinstance(p, dict) and "type" in p:
                raise _reject("unsupported_content", f"{where}: content part {k} has type {p['type']!r}")
            else:
                raise _reject("bad_type", f"{where}: content part {k} is not a text part")
        return "".join(parts)
    raise _reject("bad_type", f"{where}: content is {type(v).__name__}, not a string")


def _tool_call(call: Any, where: str) -> dict:
    """One tool call in OpenAI shape, ``arguments`` as a JSON string."""
    if isinstance(call, str):
        try:
            call = json.loads(call)
        except ValueError:
            raise _reject("bad_tool_call", f"{where}: not valid JSON") from None
    if not isinstance(call, dict):
        raise _reject("bad_tool_call", f"{where}: not an object")
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise _reject("bad_tool_call", f"{where}: no function name")
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            json.loads(args)
        except ValueError:
            raise _reject("bad_tool_call", f"{where}: arguments are not valid JSON") from None
    else:
        args = json.dumps(args, ensure_ascii=False)
    out: dict[str, Any] = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _tools(v: Any) -> list[dict] | None:
    """Tool schemas in OpenAI/HF shape; bare function schemas are wrapped."""
    if v is None or v == "" or v == []:
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            raise _reject("bad_tool_call", "field 'tools' is not valid JSON") from None
    if isinstance(v, dict):
        v = [v]
    if not isinstance(v, list):
        raise _reject("bad_type", "field 'tools' is not a list")
    out = []
    for k, t in enumerate(v):
        if not isinstance(t, dict):
            raise _reject("bad_tool_call", f"tools[{k}] is not an object")
        if "function" not in t:
            t = {"type": "function", "function": t}
        if not isinstance(t["function"], dict) or not isinstance(t["function"].get("name"), str):
            raise _reject("bad_tool_call", f"tools[{k}] has no function name")
        out.append(t)
    return out or None


def _messages(rec: dict) -> Conversation:
    turns = rec["messages"]
    if not isinstance(turns, list):
        raise _reject("bad_type", "field 'messages' is not a list")
    msgs = []
    for k, t in enumerate(turns):
        where = f"messages[{k}]"
        if not isinstance(t, dict):
            raise _reject("bad_type", f"{where} is not an object")
        role = t.get("role")
        if not isinstance(role, str) or role not in _OPENAI_ROLES:
            raise _reject("unknown_role", f"{where} has role {role!r}")
        m: dict[str, Any] = {"role": _OPENAI_ROLES[role], "content": _content(t.get("content"), where)}
        if isinstance(t.get("name"), str) and t["name"]:
            m["name"] = t["name"]
        calls = t.get("tool_calls")
        if calls is None and isinstance(t.get("function_call"), dict):
            calls = [t["function_call"]]
        if calls:
            if m["role"] != "assistant":
                raise _reject("bad_role_order", f"{where}: a {m['role']} turn carries tool calls")
            if not isinstance(calls, list):
                raise _reject("bad_tool_call", f"{where}: tool_calls is not a list")
            m["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
        if m["role"] == "tool" and isinstance(t.get("tool_call_id"), str):
            m["tool_call_id"] = t["tool_call_id"]
        msgs.append(m)
    return Conversation(msgs, _tools(rec.get("tools", rec.get("functions"))))


def _sharegpt(rec: dict) -> Conversation:
    turns = rec["conversations"]
    if not isinstance(turns, list):
        raise _reject("bad_type", "field 'conversations' is not a list")
    msgs = _system(rec)
    for k, t in enumerate(turns):
        where = f"conversations[{k}]"
        if not isinstance(t, dict):
            raise _reject("bad_type", f"{where} is not an object")
        frm = t.get("from", t.get("role"))
        if not isinstance(frm, str) or frm not in _SHAREGPT_ROLES:
            raise _reject("unknown_role", f"{where} has 'from' {frm!r}")
        value = t.get("value", t.get("content"))
        if frm == "function_call":
            calls = value if isinstance(value, list) else [value]
            msgs.append({"role": "assistant", "content": "",
                         "tool_calls": [_tool_call(c, f"{where}.value") for c in calls]})
            continue
        if not isinstance(value, str):
            raise _reject("bad_type" if value is not None else "missing_field", f"{where} has no string 'value'")
        msgs.append({"role": _SHAREGPT_ROLES[frm], "content": value})
    return Conversation(msgs, _tools(rec.get("tools")))


_PARSERS = {
    "alpaca": _alpaca,
    "dolly": _dolly,
    "self_instruct": _self_instruct,
    "messages": _messages,
    "sharegpt": _sharegpt,
    "prompt_response": _prompt_response,
}


def validate(msgs: list[dict]) -> None:
    """Check the role order and non-empty content (see the module docstring)."""
    if not msgs:
        raise _reject("empty_field", "the conversation has no turns")
    prev = None  # role of the previous turn; "assistant_call" for an assistant turn with tool calls
    for k, m in enumerate(msgs):
        role = m["role"]
        calls = bool(m.get("tool_calls"))
        if not m["content"].strip() and not calls:
            raise _reject("empty_field", f"turn {k} ({role}) is empty")
        if role == "system":
            ok = k == 0
        elif role == "user":
            ok = prev in (None, "system", "assistant")
        elif role == "assistant":
            ok = prev in ("user", "tool")
        elif role == "tool":
            ok = prev in ("assistant_call", "tool")
        else:
            raise _reject("unknown_role", f"turn {k} has role {role!r}")
        if not ok:
            raise _reject("bad_role_order", f"turn {k} ({role}) cannot follow {prev or 'the start'}")
        prev = "assistant_call" if role == "assistant" and calls else role
    if msgs[-1]["role"] != "assistant":
        raise _reject("no_assistant_end", f"the last turn is {msgs[-1]['role']}, not assistant")


def prompt_text(msgs: list[dict]) -> str:
    """The user turns' content joined by blank lines (what prompt deduplication compares)."""
    return "\n\n".join(m["content"] for m in msgs if m["role"] == "user")


def response_text(msgs: list[dict]) -> str:
    """The assistant turns' content joined by blank lines (what perplexity scores)."""
    return "\n\n".join(m["content"] for m in msgs if m["role"] == "assistant" and m["content"].strip())
