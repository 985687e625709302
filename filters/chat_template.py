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
intact, and the template text after each assistant turn holds its end-of-turn string, the
markers give the content spans (fast path). Otherwise (a template that strips
content, tests it, or drops turns) each assistant turn's start is found by rendering the
conversation before it with ``add_generation_prompt=True`` and its end by rendering the
conversation up to it; both renderings must be prefixes of the full rendering (fallback path),
or the example is refused with :class:`TemplateRenderError`. The *target* of an assistant turn
runs from the start of its content to the end of the first end-of-turn string (``<|im_end|>``)
after its content: the content, any tool calls the template writes after it, and the
end-of-turn token, which is what the model has to generate.

Tokens. The rendered text is cut into pieces at every span boundary, each piece tokenised on
its own (template text with special tokens recognised; on the fast path turn content literally:
a literal ``<|im_end|>`` typed by a user stays text), and the ids concatenated. The mask is therefore 1
exactly on the target pieces' tokens, with no token straddling a boundary. A tokenizer that adds
something to every encode call (a prefix space, BOS) cannot be cut this way and is refused.
"""

from __future__ import annotations

import hashlib
import itertools
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
_CACHE = 4096  # distinct template pieces whose ids an Encoder keeps
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
        fast = self._marked_pieces(messages, tools, plain, set(targets))
        if fast is not None:
            return fast
        starts, ends = self._prefix_spans(messages, tools, plain, targets)
        return _cut(plain, starts, ends)

    def _marked_pieces(self, messages, tools, plain: str, targets: set[int]) -> list[Piece] | None:
        """Pieces from a rendering with content markers, or None when it cannot be trusted:
        markers out of order or repeated, a turn's content altered or missing, the markers'
        removal not giving the plain rendering, or no end-of-turn in the template text right
        after a target's content."""
        if len(messages) > _MAX_TURNS:
            return None
        marked = []
        for k, m in enumerate(messages):
            c = m.get("content")
            if not isinstance(c, str) or _has_markers(c):
                return None
            marked.append({**m, "content": chr(_OPEN0 + k) + c + chr(_CLOSE0 + k)})
        text = self.render(marked, tools)
        parts = _MARKER.split(text)
        marks = _MARKER.findall(text)
        if len(marks) % 2 or "".join(parts) != plain:
            return None
        seen: set[int] = set()
        pieces: list[Piece] = []
        tail = parts[0]  # template text not yet emitted
        carry = False  # the previous content was a target: its end-of-turn is still to come
        for j in range(0, len(marks), 2):
            k = ord(marks[j]) - _OPEN0
            if not (0 <= k < len(messages)) or ord(marks[j + 1]) != _CLOSE0 + k or k in seen:
                return None
            seen.add(k)
            content = parts[j + 1]
            if content != messages[k]["content"]:
                return None
            if not _emit_template(pieces, tail, carry, self.end_of_turn):
                return None
            if content:
                pieces.append(Piece(content, True, k in targets))
            carry = k in targets
            tail = parts[j + 2]
        if not _emit_template(pieces, tail, carry, self.end_of_turn) or not targets <= seen:
            return None
        return pieces

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


def _emit_template(pieces: list[Piece], text: str, carry: bool, eot: str) -> bool:
    """Append template ``text``; after a target's content (``carry``) its first part up to and
    including the end-of-turn string is target too. False when that end-of-turn is missing."""
    if carry:
        j = text.find(eot)
        if j < 0:
            return False
        pieces.append(Piece(text[: j + len(eot)], False, True))
        text = text[j + len(eot):]
    if text:
        pieces.append(Piece(text, False, False))
    return True


def _cut(text: str, starts: dict[int, int], ends: dict[int, int]) -> list[Piece]:
    """Split ``text`` into template pieces, the target spans ``[starts[k], ends[k])`` marked."""
    pieces, pos = [], 0
    for s, e in sorted((starts[k], ends[k]) for k in starts):
        if s > pos:
            pieces.append(Piece(text[pos:s], False, False))
        pieces.append(Piece(text[s:e], False, True))
        pos = e
    if pos < len(text):
        pieces.append(Piece(text[pos:], False, False))
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
        self._cache: dict[str, list[int]] = {}

    def encode_pieces(self, batch: list[list[Piece]]) -> list[Encoded]:
        """Tokenise the pieces of many examples (at most two ``encode_batch`` calls in all).

        Template pieces repeat from example to example (``<|im_end|>\n<|im_start|>user\n``):
        their ids are cached (up to ``_CACHE`` distinct texts), so only new ones are encoded.
        """
        lit = [p.text for pieces in batch for p in pieces if p.literal]
        cache = self._cache
        new = list(dict.fromkeys(p.text for pieces in batch for p in pieces if not p.literal and p.text not in cache))
        tok = self.tok
        before = tok.encode_special_tokens
        try:
            tok.encode_special_tokens = True
            lit_ids = [e.ids for e in tok.encode_batch_fast(lit, add_special_tokens=False)] if lit else []
            tok.encode_special_tokens = False
            new_ids = [e.ids for e in tok.encode_batch_fast(new, add_special_tokens=False)] if new else []
        finally:
            tok.encode_special_tokens = before
        local = dict(zip(new, new_ids))
        if len(cache) < _CACHE:
            cache.update(local)
        tpl_ids = [local[p.text] if p.text in local else cache[p.text]
                   for pieces in batch for p in pieces if not p.literal]
        out = []
        li = ti = 0
        chain = itertools.chain.from_iterable
        for pieces in batch:
            parts, lens, flags = [], [], []
            for p in pieces:
                if p.literal:
                    ids = lit_ids[li]
                    li += 1
                else:
                    ids = tpl_ids[ti]
                    ti += 1
                parts.append(ids)
                lens.append(len(ids))
                flags.append(p.target)
            total = sum(lens)
            out.append(Encoded(np.fromiter(chain(parts), self.dtype, total),
                               np.repeat(np.asarray(flags, np.uint8), lens)))
        return out

    def pieces(self, messages: Sequence[dict], tools: list | None = None) -> list[Piece]:
        return self.template.pieces(messages, tools, self.last_turn_only)

    def encode(self, messages: Sequence[dict], tools: list | None = None) -> Encoded:
        return self.encode_pieces([self.pieces(messages, tools)])[0]
