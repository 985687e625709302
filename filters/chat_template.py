"""Chat templates (HF ``chat_template`` Jinja text), assistant spans and loss masks.

Rendering follows what HF transformers does with the ``chat_template`` field of a
``tokenizer_config.json``, so a user's template works unchanged: a sandboxed, immutable Jinja
environment with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a
``tojson`` filter that does not escape HTML (``ensure_ascii``, ``indent``, ``separators``,
``sort_keys`` arguments), ``raise_exception(msg)``, ``strftime_now(fmt)`` and a pass-through
``{% generation %}`` block; the template sees ``messages``, ``tools``,
``add_generation_prompt`` and the special tokens (``bos_token``, ``eos_token``, ...). One
deliberate difference: ``strftime_now`` formats a fixed date (``date``, default 2024-01-01), so
that outputs are deterministic.

Assistant spans. :meth:`ChatTemplate.pieces` renders the conversation twice: as is, and with
every turn's content wrapped in two private-use marker characters unique to the turn. When
removing the markers gives exactly the plain rendering and every turn's content appears once,
intact, the markers give the content spans (fast path). Otherwise (a template that strips
content, tests it, or drops turns) each assistant turn's start is found by rendering the
conversation before it with ``add_generation_prompt=True`` and its end by rendering the
conversation up to it; both renderings must be prefixes of the full rendering (fallback path),
or the example is refused with :class:`TemplateRenderError`. The *target* of an assistant turn
runs from the start of its content to the end of the first end-of-turn string (``<|im_end|>``)
after its content: the content, any tool calls the template writes after it, and the
end-of-turn token, which is what the model has to generate.

Tokens. The rendered text is cut into pieces at every span boundary, each piece tokenised on
its own (template text with special tokens recognised, turn content literally: a literal
``<|im_end|>`` typed by a user stays text), and the ids concatenated. The mask is therefore 1
exactly on the target pieces' tokens, with no token straddling a boundary. A tokenizer that adds
something to every encode call (a prefix space, BOS) cannot be cut this way and is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

from curate.errors import ConfigError, CurateError

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "manifests" / "chat_templates"
_OPEN0 = 0xF0000  # supplementary private use area A: a turn's open marker is chr(_OPEN0 + k)
_CLOSE0 = 0x100000  # area B: its close marker
_MAX_TURNS = 0xFFFD
_MARKER = re.compile("[\U000F0000-\U0010FFFF]")


class TemplateRenderError(CurateError):
    """A conversation cannot be rendered (the template raised, or its spans cannot be found)."""


class _Generation(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (HF's assistant-mask block): renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def make_environment(date: str = "2024-01-01") -> ImmutableSandboxedEnvironment:
    """A Jinja environment that renders templates the way HF's ``apply_chat_template`` does."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols, _Generation])
    fixed = datetime.fromisoformat(date)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: fixed.strftime(fmt)
    return env


@dataclass(frozen=True)
class Piece:
    """A run of rendered text: ``literal`` text is turn content (special tokens not parsed);
    ``target`` text is trained on (mask 1)."""

    text: str
    literal: bool
    target: bool


@dataclass
class ChatTemplate:
    """A compiled chat template.

    Args:
        source: the Jinja text (as in ``tokenizer_config.json``'s ``chat_template``).
        name: a name for messages and ``meta.json``.
        end_of_turn: the string that closes an assistant turn (``<|im_end|>``, ``<|eot_id|>``).
        special_tokens: control tokens the template writes (added to the tokenizer).
        variables: extra template variables (``bos_token``, ``eos_token``, ...).
        date: the date ``strftime_now`` formats.
    """

    source: str
    name: str
    end_of_turn: str
    special_tokens: tuple[str, ...] = ()
    variables: dict[str, Any] = field(default_factory=dict)
    date: str = "2024-01-01"

    def __post_init__(self):
        if not self.end_of_turn:
            raise ConfigError(f"chat template {self.name!r}: end_of_turn must be set")
        try:
            self._tpl = make_environment(self.date).from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError(f"chat template {self.name!r}: line {e.lineno}: {e.message}") from None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def render(self, messages: Sequence[dict], tools: list | None = None, add_generation_prompt: bool = False) -> str:
        """The template's text for ``messages`` (TemplateRenderError when the template raises)."""
        try:
            return self._tpl.render(messages=list(messages), tools=tools or None,
                                    add_generation_prompt=add_generation_prompt, **self.variables)
        except jinja2.exceptions.TemplateError as e:
            raise TemplateRenderError(f"chat template {self.name!r}: {e}") from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
            raise TemplateRenderError(f"chat template {self.name!r}: {type(e).__name__}: {e}") from None

    def pieces(self, messages: Sequence[dict], tools: list | None = None, last_turn_only: bool = False) -> list[Piece]:
        """The rendered text as pieces (see the module docstring); ``"".join`` gives the text.

        Args:
            messages: turns as template-ready dicts (see :func:`template_messages`).
            tools: tool schemas or None.
            last_turn_only: only the last assistant turn is a target.
        """
        plain = self.render(messages, tools)
        assistants = [k for k, m in enumerate(messages) if m.get("role") == "assistant"]
        targets = assistants[-1:] if last_turn_only else assistants
        spans = self._marked_spans(messages, tools, plain)
        if spans is not None:
            content = {k: s for k, s in spans.items()}
            starts = {k: content[k][0] for k in targets}
            ends = {k: self._eot_after(plain, content[k][1], k) for k in targets}
        else:
            content = {}
            starts, ends = self._prefix_spans(messages, tools, plain, targets)
        return _cut(plain, content, starts, ends)

    def _eot_after(self, text: str, pos: int, k: int) -> int:
        j = text.find(self.end_of_turn, pos)
        if j < 0:
            raise TemplateRenderError(
                f"chat template {self.name!r}: no end-of-turn {self.end_of_turn!r} after assistant turn {k}")
        return j + len(self.end_of_turn)

    def _marked_spans(self, messages, tools, plain: str) -> dict[int, tuple[int, int]] | None:
        """Content span of every turn from a marker rendering, or None when it cannot be trusted."""
        if len(messages) > _MAX_TURNS:
            return None
        marked = []
        for k, m in enumerate(messages):
            c = m.get("content")
            if not isinstance(c, str) or _has_markers(c):
                return None
            marked.append({**m, "content": chr(_OPEN0 + k) + c + chr(_CLOSE0 + k)})
        text = self.render(marked, tools)
        spans: dict[int, tuple[int, int]] = {}
        opened: dict[int, int] = {}
        out = []
        last = 0
        pos = 0  # position in the marker-free text
        for mt in _MARKER.finditer(text):
            i = mt.start()
            out.append(text[last:i])
            pos += i - last
            last = i + 1
            o = ord(text[i])
            if o >= _CLOSE0:
                k = o - _CLOSE0
                if k not in opened or k in spans:
                    return None
                spans[k] = (opened[k], pos)
            else:
                k = o - _OPEN0
                if k in opened:
                    return None
                opened[k] = pos
        out.append(text[last:])
        if "".join(out) != plain or set(opened) != set(spans):
            return None
        for k, (s, e) in spans.items():
            if plain[s:e] != messages[k]["content"]:
                return None
        for k, m in enumerate(messages):
            if m.get("role") == "assistant" and k not in spans:
                return None
        return spans

    def _prefix_spans(self, messages, tools, plain: str, targets: list[int]):
        starts, ends = {}, {}
        for k in targets:
            before = self.render(messages[:k], tools, add_generation_prompt=True)
            upto = self.render(messages[: k + 1], tools)
            if not (plain.startswith(before) and plain.startswith(upto) and len(upto) > len(before)):
                raise TemplateRenderError(
                    f"chat template {self.name!r}: cannot locate assistant turn {k} (neither content markers "
                    "nor prefix renderings line up with the full rendering)")
            j = upto.rfind(self.end_of_turn, len(before))
            if j < 0:
                raise TemplateRenderError(
                    f"chat template {self.name!r}: no end-of-turn {self.end_of_turn!r} in assistant turn {k}")
            starts[k], ends[k] = len(before), j + len(self.end_of_turn)
        return starts, ends


def _has_markers(s: str) -> bool:
    return not s.isascii() and _MARKER.search(s) is not None


def _cut(text: str, content: dict[int, tuple[int, int]], starts: dict[int, int], ends: dict[int, int]) -> list[Piece]:
    """Split ``text`` at every content and target boundary into pieces."""
    bounds = {0, len(text)}
    for s, e in content.values():
        bounds.update((s, e))
    for k in starts:
        bounds.update((starts[k], ends[k]))
    cuts = sorted(bounds)
    lit = sorted(content.values())
    tgt = sorted((starts[k], ends[k]) for k in starts)
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        if a == b:
            continue
        literal = any(s <= a and b <= e for s, e in lit)
        target = any(s <= a and b <= e for s, e in tgt)
        pieces.append(Piece(text[a:b], literal, target))
    return pieces


# ----------------------------------------------------------------------------- loading


def template_messages(messages: Sequence[dict], parse_arguments: bool = True) -> list[dict]:
    """Turns as a template expects them: absent fields left out (a ``None`` would make
    ``"tool_calls" in message`` true), tool-call arguments parsed into objects when they are
    JSON objects (HF's documented shape) unless ``parse_arguments`` is False."""
    out = []
    for m in messages:
        d = {k: v for k, v in m.items() if v is not None}
        calls = d.get("tool_calls")
        if calls:
            new = []
            for c in calls:
                c = {k: v for k, v in c.items() if v is not None}
                fn = dict(c.get("function") or {})
                args = fn.get("arguments")
                if parse_arguments and isinstance(args, str):
                    try:
                        parsed = json.loads(args)
                    except ValueError:
                        parsed = None
                    if isinstance(parsed, dict):
                        fn["arguments"] = parsed
                c["function"] = fn
                new.append(c)
            d["tool_calls"] = new
        elif "tool_calls" in d:
            del d["tool_calls"]
        out.append(d)
    return out


def builtin_templates() -> list[str]:
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja"))


def load_template(
    name: str | None = None,
    path: str | None = None,
    tokenizer_config: str | None = None,
    end_of_turn: str | None = None,
    special_tokens: Sequence[str] | None = None,
    variables: dict[str, Any] | None = None,
    date: str = "2024-01-01",
) -> ChatTemplate:
    """A built-in template by ``name`` (``chatml``, ``llama3``), a Jinja file (``path``) or the
    ``chat_template`` of a ``tokenizer_config.json``.

    A built-in or a file ``X.jinja`` with a ``X.json`` beside it takes ``end_of_turn``,
    ``special_tokens``, ``bos_token``/``eos_token`` from it; a ``tokenizer_config.json`` gives
    ``bos_token``/``eos_token`` and its added special tokens, and its ``eos_token`` is the
    end-of-turn unless ``end_of_turn`` is given. Explicit arguments win.
    """
    given = [x for x in (name, path, tokenizer_config) if x]
    if len(given) != 1:
        raise ConfigError("chat template: give exactly one of name, path, tokenizer_config")
    meta: dict[str, Any] = {}
    if tokenizer_config:
        p = Path(tokenizer_config)
        try:
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"chat template: cannot read {p}: {e}") from None
        source = cfg.get("chat_template")
        if isinstance(source, list):  # named templates: take "default"
            source = next((t.get("template") for t in source if t.get("name") == "default"), None)
        if not isinstance(source, str):
            raise ConfigError(f"chat template: {p} has no chat_template string")
        label = str(p)
        for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
            v = cfg.get(key)
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str):
                meta[key] = v
        meta["end_of_turn"] = meta.get("eos_token")
        meta["special_tokens"] = [t["content"] for t in (cfg.get("added_tokens_decoder") or {}).values()
                                  if isinstance(t, dict) and t.get("special") and isinstance(t.get("content"), str)]
    else:
        p = TEMPLATES_DIR / f"{name}.jinja" if name else Path(path)
        if not p.is_file():
            known = ", ".join(builtin_templates())
            raise ConfigError(f"chat template not found: {p}" + (f" (built-in: {known})" if name else ""))
        source = p.read_text(encoding="utf-8")
        label = name or str(p)
        side = p.with_suffix(".json")
        if side.is_file():
            meta = json.loads(side.read_text(encoding="utf-8"))
    eot = end_of_turn or meta.get("end_of_turn")
    specials = list(special_tokens) if special_tokens is not None else list(meta.get("special_tokens") or [])
    var = {k: meta[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in meta}
    var.update(variables or {})
    for tok in (var.get("bos_token"), var.get("eos_token"), eot):
        if tok and tok not in specials and tok.startswith("<") and tok.endswith(">"):
            specials.append(tok)
    if not eot:
        raise ConfigError(f"chat template {label!r}: set end_of_turn (the string that closes an assistant turn)")
    return ChatTemplate(source, label, eot, tuple(specials), var, date)


# ----------------------------------------------------------------------------- tokens


@dataclass
class Encoded:
    """Token ids and loss mask of one example."""

    ids: np.ndarray
    mask: np.ndarray


def add_special_tokens(tok, tokens: Sequence[str]) -> list[str]:
    """Append ``tokens`` the tokenizer lacks as special tokens (new ids at the end); returns those added."""
    from tokenizers import AddedToken

    missing = [t for t in dict.fromkeys(tokens) if tok.token_to_id(t) is None]
    if missing:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return missing


def check_splittable(tok) -> None:
    """Refuse a tokenizer whose encode calls add text or tokens (pieces could not be joined)."""
    a = tok.encode("ab", add_special_tokens=False).ids
    b = tok.encode("a", add_special_tokens=False).ids + tok.encode("b", add_special_tokens=False).ids
    if tok.decode(b, skip_special_tokens=False) != tok.decode(a, skip_special_tokens=False):
        raise ConfigError("tokenizer adds text to every encode call (a prefix space?); it cannot tokenise "
                          "rendered pieces separately, which the loss masks need")


class Encoder:
    """Renders conversations with a template and tokenises them into ids + loss masks.

    Args:
        template: the chat template.
        tokenizer: a ``tokenizers.Tokenizer`` that knows the template's special tokens.
        dtype: numpy dtype of the ids.
        last_turn_only: only the last assistant turn is a target.
    """

    def __init__(self, template: ChatTemplate, tokenizer, dtype=np.uint32, last_turn_only: bool = False):
        self.template = template
        self.tok = tokenizer
        self.dtype = np.dtype(dtype)
        self.last_turn_only = last_turn_only
        missing = [t for t in template.special_tokens if tokenizer.token_to_id(t) is None]
        if missing:
            raise ConfigError(f"tokenizer lacks the template's special tokens {missing}")
        check_splittable(tokenizer)

    def encode_pieces(self, batch: list[list[Piece]]) -> list[Encoded]:
        """Tokenise the pieces of many examples (two ``encode_batch`` calls in all)."""
        lit, tpl = [], []
        for pieces in batch:
            for p in pieces:
                (lit if p.literal else tpl).append(p.text)
        tok = self.tok
        before = tok.encode_special_tokens
        try:
            tok.encode_special_tokens = True
            lit_ids = [e.ids for e in tok.encode_batch_fast(lit, add_special_tokens=False)] if lit else []
            tok.encode_special_tokens = False
            tpl_ids = [e.ids for e in tok.encode_batch_fast(tpl, add_special_tokens=False)] if tpl else []
        finally:
            tok.encode_special_tokens = before
        out = []
        li = ti = 0
        for pieces in batch:
            ids: list[int] = []
            mask: list[int] = []
            for p in pieces:
                if p.literal:
                    piece_ids = lit_ids[li]
                    li += 1
                else:
                    piece_ids = tpl_ids[ti]
                    ti += 1
                ids.extend(piece_ids)
                mask.extend([1 if p.target else 0] * len(piece_ids))
            out.append(Encoded(np.asarray(ids, self.dtype), np.asarray(mask, np.uint8)))
        return out

    def pieces(self, messages: Sequence[dict], tools: list | None = None) -> list[Piece]:
        return self.template.pieces(messages, tools, self.last_turn_only)

    def encode(self, messages: Sequence[dict], tools: list | None = None) -> Encoded:
        return self.encode_pieces([self.pieces(messages, tools)])[0]
