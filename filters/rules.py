"""Quality rules: the protocol, the registry, and loading a user's rules by import path.

A rule is one class. It declares

* ``code``: its reason code is ``quality.<code>`` (declared in :mod:`curate.reasons` with
  ``meaning`` when the class is registered); a document's ``detail`` lists the codes of all
  the rules it breaks;
* ``params``: its config parameters, ``{name: (type, default)}``. The first one is the
  rule's switch: ``None`` or ``False`` turns the rule off (its signals are still written);
* ``signals``: the columns it writes, ``{column: Arrow type}``;

and implements two methods, in the spirit of DataTrove's ``filter(doc) -> bool``, split so
that the decision can be replayed from the columns ("score first, decide later"):

* ``score(doc) -> {column: value}``: the values of its signals for one
  :class:`filters.heuristics.Doc`. The doc computes what several rules share (words, lines,
  the n-gram index) once, on first use;
* ``keep(signals) -> bool``: ``True`` keeps the document. ``signals`` holds every signal of
  the document (every rule scores before any decides), so a rule may decide on a column
  another rule writes. It is only called when the rule is on.

Example (a user's rule; ``tests/plugins/curate_shouty`` is a complete plugin package)::

    class NoShouting(Rule):
        code = "no_shouting"
        meaning = "more than max_caps_ratio of the letters are capitals"
        params = {"max_caps_ratio": (float | None, 0.5)}
        signals = {"caps_ratio": pa.float32()}

        def score(self, doc):
            letters = [c for c in doc.text if c.isalpha()]
            return {"caps_ratio": sum(c.isupper() for c in letters) / len(letters) if letters else 0.0}

        def keep(self, signals):
            return signals["caps_ratio"] <= self.threshold

The built-in Gopher / C4 / FineWeb rules (:mod:`filters.heuristics`) are registered with
:func:`builtin`; their parameters are top-level keys of the quality config. A user's rules
are named in the config's ``rules`` mapping by import path (``package.module:Class``) or by
the name of an entry point in the group ``curate.rules`` (an installed plugin); their
parameters go under that key::

    quality:
      config:
        rules: {"mypkg.rules:NoShouting": {max_caps_ratio: 0.5}}

A plugin's code and columns may not clash with a built-in rule's or another plugin's. Rules
decide in order: built-ins first, then ``rules`` in the order given; a rejected document's
reason is the first rule it breaks, and its columns follow the built-in signal columns.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from curate.errors import ConfigError, CurateError
from curate.reasons import ReasonError, declare

ENTRY_POINT_GROUP = "curate.rules"
STAGE = "quality"
# Signals of the document itself (not of a rule), written before every rule's columns.
DOC_SIGNALS: dict[str, pa.DataType] = {"quality_cjk": pa.bool_()}

_CODE = re.compile(r"^[a-z0-9_]+$")
_BUILTIN: list[type[Rule]] = []
_PARAMS_MODEL: dict[type, type[BaseModel]] = {}


class RuleError(CurateError):
    """A quality rule failed on a document (its ``record`` attribute is the document's id)."""

    def __init__(self, message: str, record: str | None = None):
        super().__init__(message)
        self.record = record


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule:
    """Base class of a quality rule (see the module docstring for the protocol).

    A subclass that needs set-up (a word list, a model) overrides ``__init__`` and calls
    ``super().__init__(config)`` first.

    Attributes:
        config: the rule's validated parameters (attributes named as in ``params``).
        threshold: the value of the first parameter (None when the rule has none).
        enabled: False when the first parameter is None or False (the signals are still
            written).
    """

    code: ClassVar[str]
    meaning: ClassVar[str]
    params: ClassVar[dict[str, tuple[Any, Any]]] = {}
    signals: ClassVar[dict[str, pa.DataType]] = {}

    def __init__(self, config: BaseModel):
        self.config = config
        # The value of the first parameter (None when the rule has none); a rule with
        # parameters is off when it is None or False.
        self.threshold: Any = getattr(config, next(iter(self.params))) if self.params else None
        self.enabled = not self.params or (self.threshold is not None and self.threshold is not False)

    def score(self, doc) -> dict[str, Any]:
        """``{column: value}`` for every column in ``signals``."""
        return {}

    def keep(self, signals: Mapping[str, Any]) -> bool:
        """Whether the document passes this rule, judged on its signals."""
        raise NotImplementedError


class ThresholdRule(Rule):
    """A rule that compares one signal with its threshold (the first parameter).

    ``op`` is ``">"`` (reject above a maximum), ``"<"`` (below a minimum), ``"outside"``
    (threshold ``(low, high)``) or ``"true"`` (reject when the boolean signal is true). A
    signal that is None (not applicable to the document) passes. ``signal`` defaults to the
    rule's only column; a rule may also compare a column that another rule writes.
    """

    signal: ClassVar[str]
    op: ClassVar[str] = ">"

    def keep(self, signals: Mapping[str, Any]) -> bool:
        v = signals[self.signal]
        if v is None:
            return True
        thr = self.threshold
        if self.op == ">":
            return not v > thr
        if self.op == "<":
            return not v < thr
        if self.op == "true":
            return not v
        lo, hi = thr
        return not (v < lo or v > hi)


def register(cls: type[Rule], label: str | None = None) -> type[Rule]:
    """Check a rule class, build its parameter model and declare its reason code.

    ``label`` names the rule in errors (default ``module:Class``).
    """
    if not (isinstance(cls, type) and issubclass(cls, Rule)):
        raise ConfigError(f"quality rule {label or repr(cls)}: {cls!r} is not a quality rule "
                          "(a subclass of filters.rules.Rule)")
    if cls in _PARAMS_MODEL:
        return cls
    name = label or f"{cls.__module__}:{cls.__qualname__}"
    code, meaning = getattr(cls, "code", None), getattr(cls, "meaning", None)
    if not isinstance(code, str) or not _CODE.match(code):
        raise ConfigError(f"quality rule {name} needs a `code` of lower-case letters, digits and _ (got {code!r})")
    if not isinstance(meaning, str) or not meaning.strip():
        raise ConfigError(f"quality rule {name} needs a one-line `meaning` of its reason code")
    for col, typ in cls.signals.items():
        if not isinstance(typ, pa.DataType):
            raise ConfigError(f"quality rule {name}: signal {col!r} needs an Arrow type (got {typ!r})")
    if cls.keep is Rule.keep:
        raise ConfigError(f"quality rule {name} needs a `keep(signals) -> bool` method")
    if issubclass(cls, ThresholdRule) and cls.op not in (">", "<", "outside", "true"):
        raise ConfigError(f"quality rule {name}: `op` must be '>', '<', 'outside' or 'true' (got {cls.op!r})")
    if issubclass(cls, ThresholdRule) and not hasattr(cls, "signal"):
        if len(cls.signals) != 1:
            raise ConfigError(f"quality rule {name}: a ThresholdRule with several signals must name its `signal`")
        cls.signal = next(iter(cls.signals))
    try:
        model = create_model(f"{cls.__name__}Params", __base__=_Params, **dict(cls.params))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"quality rule {name}: bad `params` ({e})") from None
    try:
        declare(STAGE, {code: meaning}, origin=cls.__module__)
    except ReasonError as e:
        raise ConfigError(f"quality rule {name}: {e}") from None
    _PARAMS_MODEL[cls] = model
    return cls


def builtin(cls: type[Rule]) -> type[Rule]:
    """Register a built-in rule: on by default, parameters at the top level of the config."""
    register(cls)
    taken_params = {p for r in _BUILTIN for p in r.params}
    taken_signals = {s for r in _BUILTIN for s in r.signals} | set(DOC_SIGNALS)
    if cls.code in {r.code for r in _BUILTIN}:
        raise ConfigError(f"built-in quality rule code {cls.code!r} registered twice")
    if clash := (set(cls.params) & taken_params) or (set(cls.signals) & taken_signals):
        raise ConfigError(f"built-in quality rule {cls.code!r}: {sorted(clash)} already taken by another rule")
    _BUILTIN.append(cls)
    return cls


def builtin_rules() -> list[type[Rule]]:
    """The built-in rule classes, in decision order."""
    import filters.heuristics  # noqa: F401  (registers the built-in rules)

    return list(_BUILTIN)


def load_rule(spec: str) -> type[Rule]:
    """The rule class named by ``package.module:Class`` or by an entry point of ``curate.rules``."""
    if ":" in spec:
        modname, _, attr = spec.partition(":")
        try:
            mod = importlib.import_module(modname)
        except Exception as e:  # noqa: BLE001 (any failure to import a plugin becomes one line)
            raise ConfigError(f"quality rule {spec!r}: cannot import module {modname!r} "
                              f"({type(e).__name__}: {e})") from None
        obj: Any = mod
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigError(f"quality rule {spec!r}: module {modname!r} has no attribute {attr!r}")
    else:
        eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        if spec not in eps:
            near = difflib.get_close_matches(spec, list(eps), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"quality rule {spec!r} is neither `package.module:Class` nor an entry point of group "
                f"{ENTRY_POINT_GROUP!r} (installed: {', '.join(sorted(eps)) or 'none'}){hint}"
            )
        try:
            obj = eps[spec].load()
        except Exception as e:  # noqa: BLE001 (any import failure of a plugin becomes one line)
            raise ConfigError(f"quality rule {spec!r}: entry point {eps[spec].value!r} failed to load "
                              f"({type(e).__name__}: {e})") from None
    builtins = builtin_rules()
    if obj not in builtins and getattr(obj, "code", None) in {r.code for r in builtins}:
        raise ConfigError(f"quality rule {spec!r}: code {obj.code!r} is already used by a built-in rule")
    return register(obj, repr(spec))


def build_params(cls: type[Rule], values: Mapping[str, Any] | None, where: str) -> BaseModel:
    """Validate a rule's parameters; an unknown or bad one is a ConfigError naming ``where``."""
    model = _PARAMS_MODEL[register(cls)]
    try:
        return model.model_validate(dict(values or {}))
    except ValidationError as e:
        parts = []
        for err in e.errors():
            key = ".".join(str(x) for x in err["loc"])
            if err["type"] == "extra_forbidden":
                near = difflib.get_close_matches(key, list(cls.params), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                parts.append(f"unknown parameter {key!r} of quality rule {where} "
                             f"(parameters: {', '.join(cls.params) or 'none'}){hint}")
            else:
                parts.append(f"quality rule {where}: parameter {key!r}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("; ".join(parts)) from None


def check_plugins(specs: Mapping[str, Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """Load and validate the ``rules`` mapping of a quality config.

    Returns ``{spec: parameters with their defaults}``. A plugin's code or signal column that
    a built-in rule or an earlier plugin already has is an error.
    """
    builtins = builtin_rules()
    codes = {r.code: "a built-in rule" for r in builtins}
    columns = {c: "a built-in rule" for r in builtins for c in r.signals} | {c: "the stage" for c in DOC_SIGNALS}
    out: dict[str, dict[str, Any]] = {}
    for spec, values in specs.items():
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"quality rule {spec!r}: parameters must be a mapping (got {values!r})")
        cls = load_rule(spec)
        if cls in builtins:
            raise ConfigError(f"quality rule {spec!r} is built in: set its parameters at the top level")
        if cls.code in codes:
            raise ConfigError(f"quality rule {spec!r}: code {cls.code!r} is already used by {codes[cls.code]}")
        for col in cls.signals:
            if col in columns:
                raise ConfigError(f"quality rule {spec!r}: signal column {col!r} is already written by {columns[col]}")
            columns[col] = repr(spec)
        codes[cls.code] = repr(spec)
        out[spec] = build_params(cls, values, repr(spec)).model_dump(mode="json")
    return out


def make_rules(config: BaseModel) -> list[Rule]:
    """Rule instances in decision order: the built-ins, with their parameters from the top-level
    keys of the quality ``config``, then the plugins of its ``rules`` mapping."""
    rules = [cls(build_params(cls, {p: getattr(config, p) for p in cls.params}, cls.code))
             for cls in builtin_rules()]
    for spec, values in getattr(config, "rules", {}).items():
        cls = load_rule(spec)
        rules.append(cls(build_params(cls, values, repr(spec))))
    return rules


def signal_fields(rules: list[Rule]) -> list[pa.Field]:
    """The signal columns in the order they are written: the document's, then each rule's."""
    return [pa.field(n, t) for n, t in DOC_SIGNALS.items()] + [
        pa.field(n, t) for r in rules for n, t in r.signals.items()
    ]


def config_fields() -> dict[str, tuple[Any, Any]]:
    """``{key: (type, default)}`` of the built-in rules' parameters (top-level config keys)."""
    return {p: spec for cls in builtin_rules() for p, spec in cls.params.items()}
