"""The reason registry: every reject code is declared once, with a one-line meaning.

Codes are ``<stage type>.<code>``. A stage module declares its codes when it is imported::

    REASONS = declare("extract", {"empty": "no main text was found on the page", ...})

and a plugin (a user's stage or quality rule) does the same from its own module. The shard
writer (:func:`curate.shards.write_shard`) refuses a rejected row whose reason was never
declared, so a code cannot exist without its meaning. ``curate reasons`` lists the registry
and ``docs/REASONS.md`` is generated from it (``python -m curate.reasons --markdown``).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Mapping

_CODE = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z0-9_][a-z0-9_.-]*$")
_REGISTRY: dict[str, str] = {}
_ORIGIN: dict[str, str] = {}

BUILTIN_PACKAGE = "stages"  # importing every module of it declares the built-in codes


class ReasonError(ValueError):
    """A reason code that is malformed, undeclared or declared twice with other meanings."""


def declare(stage: str, codes: Mapping[str, str], origin: str | None = None) -> dict[str, str]:
    """Declare ``{code: meaning}`` for ``stage``; returns ``{code: "<stage>.<code>"}``.

    Declaring the same code again with the same meaning is a no-op (modules may be imported
    twice under Ray); another meaning is a :class:`ReasonError`.
    """
    origin = origin or _caller_module()
    out = {}
    for code, meaning in codes.items():
        full = f"{stage}.{code}"
        if not _CODE.match(full):
            raise ReasonError(f"reason code {full!r} is not of the form '<stage>.<code>' (lower case)")
        meaning = " ".join(str(meaning).split())
        if not meaning:
            raise ReasonError(f"reason code {full!r} needs a one-line meaning")
        old = _REGISTRY.get(full)
        if old is not None and old != meaning:
            raise ReasonError(f"reason code {full!r} declared twice with different meanings "
                              f"({_ORIGIN.get(full)}: {old!r}; {origin}: {meaning!r})")
        _REGISTRY[full] = meaning
        _ORIGIN.setdefault(full, origin)
        out[code] = full
    return out


def _caller_module() -> str:
    f = sys._getframe(2)
    return f.f_globals.get("__name__", "?")


def meaning(code: str) -> str | None:
    return _REGISTRY.get(code)


def check(codes) -> None:
    """Raise :class:`ReasonError` naming the first code in ``codes`` that was never declared."""
    for c in codes:
        if c not in _REGISTRY:
            stage = c.split(".", 1)[0] if isinstance(c, str) else "?"
            near = sorted(k for k in _REGISTRY if k.startswith(stage + "."))
            hint = f" (declared for {stage}: {', '.join(near)})" if near else ""
            raise ReasonError(f"reject reason {c!r} is not declared in the reason registry{hint}")


def load_builtins() -> None:
    """Import every built-in stage module (and so the filters they use): their codes."""
    import pkgutil

    pkg = importlib.import_module(BUILTIN_PACKAGE)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")


def registry(include_builtins: bool = True) -> dict[str, tuple[str, str]]:
    """``{code: (meaning, declaring module)}``, sorted by code."""
    if include_builtins:
        load_builtins()
    return {k: (_REGISTRY[k], _ORIGIN.get(k, "?")) for k in sorted(_REGISTRY)}


def markdown() -> str:
    """The docs table (docs/REASONS.md): the built-in codes (plugins' codes are theirs)."""
    lines = [
        "# Reject reasons",
        "",
        "Generated from the reason registry (`curate/reasons.py`) by `python -m curate.reasons --markdown`;"
        " do not edit by hand.",
        "",
        "| code | meaning | declared in |",
        "|---|---|---|",
    ]
    for code, (text, origin) in registry().items():
        if not origin.startswith(("stages.", "filters.", "curate.")):
            continue
        lines.append(f"| `{code}` | {text.replace('|', '/')} | `{origin}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    # Run as a script this module is __main__; the stages declare into curate.reasons.
    from curate import reasons as _registry

    if "--markdown" in sys.argv:
        sys.stdout.write(_registry.markdown())
    else:
        for code, (text, _) in _registry.registry().items():
            print(f"{code}\t{text}")
