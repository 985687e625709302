"""The stage contract.

A stage is a module ``stages/<type>.py`` (dashes become underscores) that defines a class
and points ``STAGE`` at it. Stages never import ray; they get an executor from the runner.

* :class:`MapStage` works on one shard at a time (shard ``i`` of the output comes from input
  shard ``i``). It implements :meth:`MapStage.process` on an Arrow table and returns kept
  rows, rejected rows (built with :func:`curate.schema.make_rejected`) and optional extra
  stats. The runner reads inputs, writes outputs atomically, checks conservation, writes
  per-shard markers for resume and the stage manifest.
* :class:`SourceStage` is a map stage whose inputs are raw files (WARC, HTML folders).
* :class:`GlobalStage` sees all shards at once (dedup, train-lm, mix) and drives its own
  phases through ``ctx.executor``; it returns the manifest body (counts, outputs).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
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
    """What a global stage gets: its inputs, its output dir and the executor."""

    stage_name: str
    input_shards: list[Path]  # kept shards of the input stage, in shard order
    input_dir: Path | None
    out_dir: Path
    run_dir: Path
    executor: Any  # curate.executors.Executor
    workers: int


class GlobalStage(Stage):
    def extra_inputs(self, run_dir: Path) -> list[tuple[str, str]]:
        """Files besides the input shards that the output depends on (models, mixture files),
        as ``(name, sha256)``; they count toward the input digest that decides resume."""
        return []

    @abstractmethod
    def run(self, ctx: GlobalContext) -> dict[str, Any]:
        """Do the whole stage; write outputs under ``ctx.out_dir`` atomically.

        Returns the manifest body: at least ``input_rows``, ``kept_rows``, ``rejected_rows``
        and ``reasons`` (counts per reject code), plus any stage-specific figures. The
        runner checks conservation unless the body sets ``"conservation": "n/a"`` with a
        ``"accounting"`` entry explaining what replaces it (mixing samples with epochs).
        """


def load_stage_class(stage_type: str) -> type[Stage]:
    modname = "stages." + stage_type.replace("-", "_")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name == modname:
            raise ConfigError(f"unknown stage type {stage_type!r} (no module {modname})") from None
        raise
    cls = getattr(mod, "STAGE", None)
    if cls is None:
        raise ConfigError(f"module {modname} defines no STAGE")
    return cls
