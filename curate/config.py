"""Pipeline YAML and per-stage frozen configs. Unknown keys are errors naming key and file."""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator

from .errors import ConfigError


def _increasing_percentiles(v: tuple[float, float]) -> tuple[float, float]:
    if not 0 <= v[0] < v[1] <= 100:
        raise ValueError("percentiles must be two increasing numbers in [0, 100]")
    return v


# Two per-group percentile cut-offs (perplexity buckets, sft-select tails).
PercentilePair = Annotated[tuple[float, float], AfterValidator(_increasing_percentiles)]


class StageConfig(BaseModel):
    """Base class for every stage's config: frozen, unknown keys forbidden, and no boolean
    where a number is meant (``min_score: true`` is an error, not 1.0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, v: Any, info: Any) -> Any:
        if _bool_for_number(cls.model_fields[info.field_name].annotation, v):
            raise ValueError("expected a number, got a boolean (true/false)")
        return v


def _bool_for_number(ann: Any, v: Any) -> bool:
    """Whether ``v`` holds a bool where the type ``ann`` admits a number but no bool."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        if isinstance(v, bool):
            return any(a in (int, float) for a in args) and not any(a in (bool, Any) for a in args)
        return any(_bool_for_number(a, v) for a in args)
    if isinstance(v, bool):
        return ann in (int, float)
    if isinstance(v, dict) and len(args) == 2:
        return any(_bool_for_number(args[1], x) for x in v.values())
    if isinstance(v, (list, tuple)) and args:
        if origin is tuple and Ellipsis not in args:
            return any(_bool_for_number(a, x) for a, x in zip(args, v))
        return any(_bool_for_number(args[0], x) for x in v)
    return False


def config_hash(obj: Any) -> str:
    """A stable hash of a config (a pydantic model or plain JSON-able data)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _suggest(model: type[BaseModel] | None, loc: tuple) -> str:
    """`` (did you mean 'x'?)`` for an unknown key, from the fields of the model it is in."""
    parts = list(loc[:-1])
    while parts and model is not None:
        field = model.model_fields.get(str(parts.pop(0)))
        ann = getattr(field, "annotation", None) if field else None
        if typing.get_origin(ann) is dict and parts:  # a mapping of models: skip its key
            parts.pop(0)
            ann = typing.get_args(ann)[1]
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is None:
        return ""
    near = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def format_validation_error(e: ValidationError, where: str, model: type[BaseModel] | None = None) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r} in {where}{_suggest(model, tuple(err['loc']))}")
        elif err["type"] == "missing":
            parts.append(f"missing key {loc!r} in {where}")
        else:
            parts.append(f"{where}: {loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def build_config(cls: type[StageConfig], data: dict | None, where: str) -> StageConfig:
    """Validate ``data`` into ``cls``; a bad or unknown key becomes a ConfigError naming ``where``."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where, cls)) from None


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    paths: tuple[str, ...]


class StageSpec(BaseModel):
    """One entry of a pipeline's ``stages`` mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str | None = None
    input: str | list[str] | InputSpec | None = None
    config: dict[str, Any] = {}

    @property
    def input_stages(self) -> list[str]:
        """Names of the stages this one reads (empty for a source stage)."""
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input, list):
            return list(self.input)
        return []


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pipeline: str
    executor: str = "ray"
    workers: int = 2
    max_task_retries: int = 3  # reruns of a task whose worker was lost (curate.executors)
    stages: dict[str, StageSpec]

    @field_validator("executor")
    @classmethod
    def _executor(cls, v: str) -> str:
        if v not in ("ray", "local"):
            raise ValueError("executor must be 'ray' or 'local'")
        return v


class DuplicateKeyError(yaml.YAMLError):
    """A mapping of a YAML file gives the same key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key in seen:
                raise DuplicateKeyError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The top-level mapping of a YAML file; a missing file, bad YAML or another top-level
    type is a ConfigError naming the file (``what`` says which kind of file it is)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except DuplicateKeyError as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read a pipeline YAML; relative input paths resolve against the current directory."""
    return parse_pipeline(read_yaml_mapping(path, "pipeline"), str(path))


def parse_pipeline(data: Any, where: str) -> PipelineSpec:
    """Validate pipeline data (from YAML or a dict); errors name the key and ``where``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where, PipelineSpec)) from None
    for name, st in spec.stages.items():
        for ref in st.input_stages:
            if ref not in spec.stages:
                near = difflib.get_close_matches(ref, list(spec.stages), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else f" (stages: {', '.join(spec.stages)})"
                raise ConfigError(f"{where}: stage {name!r} reads from {ref!r}, which is not a stage{hint}")
            if ref == name:
                raise ConfigError(f"{where}: stage {name!r} reads from itself")
    return spec
