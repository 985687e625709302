"""Test plugin outside the source tree: two stages the pipeline finds by import path
(``curate_toy:Upper``) or through the ``curate.stages`` entry-point group (``upper``)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from curate.config import StageConfig
from curate.reasons import declare
from curate.schema import make_rejected, split_by_mask
from curate.shardio import atomic_write_json, file_info, read_parquet
from curate.stage import GlobalResult, GlobalStage, MapStage, ShardResult

REASONS = declare("upper", {"short": "the text is shorter than min_chars"})


class UpperConfig(StageConfig):
    min_chars: int = 1


class Upper(MapStage):
    """Upper-cases the text; rejects documents shorter than ``min_chars``."""

    name = "upper"
    Config = UpperConfig

    def process(self, table: pa.Table) -> ShardResult:
        lengths = pc.utf8_length(pc.fill_null(table.column("text"), "")).to_pylist()
        keep = [n >= self.config.min_chars for n in lengths]
        kept, dropped = split_by_mask(table, keep)
        kept = kept.set_column(kept.schema.get_field_index("text"), "text", pc.utf8_upper(kept.column("text")))
        return ShardResult(kept, make_rejected(dropped, "upper", [REASONS["short"]] * dropped.num_rows))


class Undeclared(Upper):
    """Rejects everything with a reason nobody declared (the shard writer must refuse it)."""

    def process(self, table: pa.Table) -> ShardResult:
        return ShardResult(table.slice(0, 0), make_rejected(table, "upper", ["upper.nobody_declared"] * table.num_rows))


class CountBoth(GlobalStage):
    """Reads two stages (``input: [a, b]``) and writes the document count of each."""

    name = "count-both"

    def run(self, ctx) -> GlobalResult:
        counts = {name: sum(read_parquet(p, columns=["id"]).num_rows for p in shards)
                  for name, shards in ctx.inputs.items()}

        def write() -> dict:
            atomic_write_json(ctx.out_dir / "counts.json", counts)
            return {"files": [file_info(ctx.out_dir / "counts.json")]}

        res = ctx.phases.step("count", write)
        return GlobalResult(accounting="counts documents of its inputs; writes no document shards",
                            outputs=res["files"], extra={"counts": json.loads(json.dumps(counts))})
