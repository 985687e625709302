"""The stage contract.

A stage type is a built-in module ``stages/<type>.py`` (dashes become underscores) that
points ``STAGE`` at its class, an installed plugin (entry point group ``curate.stages``) or
an import path ``package.module:Class``. Stages never import ray; they get an executor (and,
for global stages, the phase engine) from the runner.

* :class:`MapStage` works on one shard at a time (shard ``i`` of the output comes from input
  shard ``i``). It implements :meth:`MapStage.process` on an Arrow table and returns kept
  rows, rejected rows (built with :func:`curate.schema.make_rejected`) and optional extra
  stats. The runner reads inputs, writes outputs atomically, checks conservation, writes
  per-shard markers for resume and the stage manifest.
* :class:`SourceStage` is a map stage whose inputs are raw files (WARC, HTML folders).
* :class:`GlobalStage` sees all shards of its inputs at once (dedup, train-lm, mix) and runs
  its phases through ``ctx.phases`` (:mod:`curate.phases`); it returns a :class:`GlobalResult`.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from .config import StageConfig
from .errors import ConfigError


@dataclass
class ShardResult:
    """What a map stage returns for one shard."""

    kept: pa.Table
    rejected: pa.Table
    stats: dict[str, Any] = field(default_factory=dict)
    # Number of input documents; defaults to the input table's rows. A source stage sets it.
    n_input: int | None = None


class Stage(ABC):
    """Common base: ``name`` (the stage type), ``version`` and a frozen ``Config``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, config: StageConfig, stage_name: str | None = None):
        self.config = config
        # The name this stage has in the pipeline (reason codes use the stage type).
        self.stage_name = stage_name or self.name

    def setup(self) -> None:
        """Load models or other heavy state. Called once per worker before any shard."""

    def stage_refs(self) -> list[str]:
        """Names of other pipeline stages this stage's config reads (e.g. ``models_from``);
        validation checks they exist and the runner runs them first."""
        return []


class MapStage(Stage):
    @abstractmethod
    def process(self, table: pa.Table) -> ShardResult:
        """Process one input shard."""


class SourceStage(Stage):
    @abstractmethod
    def list_inputs(self, paths: list[str]) -> list[str]:
        """Expand the configured input paths into a sorted list of shard inputs."""

    @abstractmethod
    def process_source(self, path: str) -> ShardResult:
        """Read one raw input (a WARC file, an HTML folder) into a shard."""

    def checksum(self, path: str) -> str:
        """Checksum of one input, recorded in markers and manifests (sha256 of the file)."""
        from .shardio import sha256_file

        return sha256_file(path)


@dataclass
class GlobalContext:
    """What a global stage gets: its inputs, its output dir, the executor and the phase engine.

    ``inputs`` maps each input stage's name to its kept shards (in shard order);
    ``input_shards`` are those of the first input. Phases (``phases.map`` / ``phases.step``)
    are the only way a global stage resumes: see :mod:`curate.phases`.
    """

    stage_name: str
    input_shards: list[Path]
    input_dir: Path | None
    out_dir: Path
    run_dir: Path
    executor: Any  # curate.executors.Executor
    workers: int
    phases: Any = None  # curate.phases.Phases
    inputs: dict[str, list[Path]] = field(default_factory=dict)
    input_dirs: dict[str, Path] = field(default_factory=dict)

    @property
    def work_dir(self) -> Path:
        return self.out_dir / "_work"


@dataclass
class GlobalResult:
    """What a global stage's ``run`` returns; the runner turns it into the manifest body.

    Attributes:
        input_rows / kept_rows / rejected_rows: document counts (conservation is checked
            unless ``accounting`` is set).
        reasons: reject code -> count.
        outputs / rejected_outputs: file info of the kept / rejected shards (or other
            outputs: models, token files).
        shards: per-shard counts.
        accounting: set when the stage's output is not documents (mixing, models): what
            replaces the conservation check.
        extra: stage-specific figures, merged into the manifest.
    """

    input_rows: int = 0
    kept_rows: int = 0
    rejected_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outputs: list[dict] = field(default_factory=list)
    rejected_outputs: list[dict] = field(default_factory=list)
    shards: list[dict] = field(default_factory=list)
    accounting: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_shards(cls, totals: dict[str, Any], **kw: Any) -> GlobalResult:
        """From the totals of :func:`curate.shards.sum_shards` (a stage that wrote shards)."""
        keys = ("input_rows", "kept_rows", "rejected_rows", "reasons", "shards", "outputs", "rejected_outputs")
        return cls(**{k: totals[k] for k in keys}, **kw)


class GlobalStage(Stage):
    def extra_inputs(self, run_dir: Path) -> list[tuple[str, str]]:
        """Files besides the input shards that the output depends on (models, mixture files),
        as ``(name, sha256)``; they count toward the input digest that decides resume."""
        return []

    @abstractmethod
    def run(self, ctx: GlobalContext) -> GlobalResult:
        """Do the whole stage through ``ctx.phases``; write outputs under ``ctx.out_dir``."""


BUILTIN_PACKAGE = "stages"
ENTRY_POINT_GROUP = "curate.stages"


def load_stage_class(stage_type: str) -> type[Stage]:
    """The class of a stage type: a built-in name (module ``stages/<type>.py``), an installed
    plugin (entry point group ``curate.stages``) or an import path ``package.module:Class``."""
    if ":" in stage_type:
        modname, _, attr = stage_type.partition(":")
        try:
            mod = importlib.import_module(modname)
        except ImportError as e:
            raise ConfigError(f"stage type {stage_type!r}: cannot import {modname!r} ({e})") from None
        cls = getattr(mod, attr, None)
        if cls is None:
            raise ConfigError(f"stage type {stage_type!r}: module {modname!r} has no {attr!r}")
    else:
        cls = _builtin_or_plugin(stage_type)
    if not (isinstance(cls, type) and issubclass(cls, Stage)) or cls in (MapStage, SourceStage, GlobalStage):
        raise ConfigError(f"stage type {stage_type!r} is not a MapStage, SourceStage or GlobalStage subclass")
    return cls


def _builtin_or_plugin(stage_type: str):
    modname = f"{BUILTIN_PACKAGE}." + stage_type.replace("-", "_")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name != modname:
            raise
        mod = None
    if mod is not None:
        cls = getattr(mod, "STAGE", None)
        if cls is None:
            raise ConfigError(f"module {modname} defines no STAGE")
        return cls
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == stage_type:
            return ep.load()
    known = builtin_stage_types() + [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)]
    near = difflib.get_close_matches(stage_type, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else f" (built-in: {', '.join(known)})"
    raise ConfigError(f"unknown stage type {stage_type!r}{hint}")


def builtin_stage_types() -> list[str]:
    """Names of the built-in stages (modules of the stages package that define STAGE)."""
    pkg = importlib.import_module(BUILTIN_PACKAGE)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            names.append(info.name.replace("_", "-"))
    return sorted(names)
