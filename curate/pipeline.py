"""Pipelines: whole-pipeline validation and the Python API.

:func:`validate` checks everything that can be checked without running a stage: every
stage's type (built-in, plugin or ``package.module:Class``), its config (unknown keys, bad
values, with "did you mean"), its inputs (a source stage reads paths that exist; a map stage
reads one stage; a global stage one or more), the stages a config refers to (``models_from``)
and cycles. It returns the stages in the order they run. ``curate validate`` does only
this; ``curate run`` does it first.

The Python API builds the same pipelines in code::

    from curate import Pipeline
    p = Pipeline("refilter", executor="local")
    p.add("read", input={"paths": ["dump.jsonl.gz"]})
    p.add("langid", input="read", config={"min_score": 0.5})
    p.validate()
    manifests = p.run("runs/refilter")

or ``Pipeline.from_yaml("manifests/demo.yaml")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import storage
from .config import PipelineSpec, StageConfig, StageSpec, build_config, config_hash, load_pipeline, parse_pipeline
from .errors import ConfigError
from .stage import GlobalStage, MapStage, SourceStage, Stage, load_stage_class


@dataclass(frozen=True)
class PlannedStage:
    """One validated stage: its class, frozen config and config hash."""

    name: str
    type: str
    cls: type[Stage]
    config: StageConfig
    config_hash: str
    spec: StageSpec
    refs: tuple[str, ...]

    def make(self) -> Stage:
        return self.cls(self.config, self.name)


def validate(spec: PipelineSpec, where: str) -> list[PlannedStage]:
    """Validate a whole pipeline; returns its stages in run order. Raises ConfigError.
    Input paths are checked by :func:`check_paths` (for the stages about to run)."""
    planned: dict[str, PlannedStage] = {}
    for name, st in spec.stages.items():
        stype = st.type or name
        what = f"stage {name!r} of {where}"
        try:
            cls = load_stage_class(stype)
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None
        try:
            cfg = build_config(cls.Config, st.config, f"config of {what}")
        except ConfigError as e:
            if what in str(e):
                raise
            raise ConfigError(f"config of {what}: {e}") from None
        stage = cls(cfg, name)
        if issubclass(cls, SourceStage):
            if st.input is None or isinstance(st.input, (str, list)):
                raise ConfigError(f"{what}: a source stage needs `input: {{paths: [...]}}`")
        elif issubclass(cls, MapStage):
            if not isinstance(st.input, str) and not (isinstance(st.input, list) and len(st.input) == 1):
                raise ConfigError(f"{what}: a map stage reads exactly one earlier stage (`input: <stage>`)")
        elif issubclass(cls, GlobalStage):
            if not st.input_stages:
                raise ConfigError(f"{what}: needs `input: <stage>` or `input: [<stage>, ...]`")
        refs = tuple(stage.stage_refs())
        for r in refs:
            if r not in spec.stages:
                raise ConfigError(f"{what}: its config refers to stage {r!r}, which is not in the pipeline")
        chash = config_hash({"type": stype, "version": cls.version, "config": cfg.model_dump(mode="json")})
        planned[name] = PlannedStage(name, stype, cls, cfg, chash, st, refs)
    return _order(planned, where)


def check_paths(plan: list[PlannedStage], where: str, names: list[str] | None = None) -> None:
    """The input paths of the source stages among ``names`` (default: all) must exist; a
    storage URI must name an object or a prefix with objects under it."""
    for p in plan:
        if names is not None and p.name not in names:
            continue
        if issubclass(p.cls, SourceStage):
            for path in p.spec.input.paths:  # type: ignore[union-attr]
                if storage.is_uri(path):
                    try:
                        found = storage.exists(path)
                    except storage.StorageError as e:
                        raise ConfigError(f"stage {p.name!r} of {where}: {e}") from None
                else:
                    found = Path(storage.local_path(path)).exists()
                if not found:
                    raise ConfigError(f"stage {p.name!r} of {where}: input path not found: {path}")


def _order(planned: dict[str, PlannedStage], where: str) -> list[PlannedStage]:
    """Topological order (declaration order among ready stages); a cycle is a ConfigError."""
    deps = {n: list(dict.fromkeys(p.spec.input_stages + list(p.refs))) for n, p in planned.items()}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = path[path.index(n):] + [n]
            raise ConfigError(f"{where}: stages form a cycle: {' -> '.join(cycle)}")
        state[n] = 1
        for d in deps[n]:
            visit(d, path + [n])
        state[n] = 2
        order.append(n)

    for n in planned:
        visit(n, [])
    return [planned[n] for n in order]


def upstream_of(plan: list[PlannedStage], targets: list[str]) -> list[str]:
    """``targets`` and every stage they depend on, in run order."""
    by_name = {p.name: p for p in plan}
    want: set[str] = set()
    stack = list(targets)
    while stack:
        n = stack.pop()
        if n in want:
            continue
        want.add(n)
        stack.extend(by_name[n].spec.input_stages + list(by_name[n].refs))
    return [p.name for p in plan if p.name in want]


class Pipeline:
    """A pipeline built in code or read from YAML, validated like ``curate run`` does."""

    def __init__(self, name: str, executor: str = "ray", workers: int = 2):
        self._data: dict[str, Any] = {"pipeline": name, "executor": executor, "workers": workers, "stages": {}}
        self.where = f"<pipeline {name}>"

    @classmethod
    def from_yaml(cls, path: str | Path) -> Pipeline:
        spec = load_pipeline(path)
        p = cls(spec.pipeline, spec.executor, spec.workers)
        p._data = spec.model_dump(mode="json", exclude_none=True)
        p.where = str(path)
        return p

    def add(self, name: str, type: str | None = None, input: Any = None, config: dict | None = None) -> Pipeline:
        """Add a stage (``type`` defaults to ``name``); returns the pipeline for chaining."""
        if name in self._data["stages"]:
            raise ConfigError(f"{self.where}: stage {name!r} is already in the pipeline")
        st: dict[str, Any] = {"config": dict(config or {})}
        if type is not None:
            st["type"] = type
        if input is not None:
            st["input"] = input
        self._data["stages"][name] = st
        return self

    @property
    def spec(self) -> PipelineSpec:
        return parse_pipeline(self._data, self.where)

    def validate(self) -> list[PlannedStage]:
        plan = validate(self.spec, self.where)
        check_paths(plan, self.where)
        return plan

    def run(self, run_dir: str | Path, executor: str | None = None, workers: int | None = None,
            stages: list[str] | None = None, force: bool = False, log=print) -> dict[str, dict]:
        """Validate, then run (or resume) into ``run_dir``; returns each stage's manifest."""
        from .runner import run_pipeline

        return run_pipeline(self.spec, run_dir, executor=executor, workers=workers, stages=stages, force=force,
                            log=log, where=self.where)
