"""The DAG runner: reads a pipeline, runs each stage through an executor, writes manifests.

Map stages: one task per input shard; the worker reads the shard, runs the stage, checks
conservation, writes kept + rejected shards atomically and then a marker in ``_shards/``.
A rerun skips every shard whose marker still matches the config hash, the input checksum
and the output checksums, so a killed run finishes with the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .config import PipelineSpec, StageSpec, build_config, config_hash, load_pipeline, parse_pipeline
from .errors import ConfigError, StageStateError
from .executors import Executor, get_executor
from .manifest import (
    SHARDS_DIR,
    check_conservation,
    marker_valid,
    read_manifest,
    read_success,
    shard_name,
    sum_stats,
    write_manifest,
    write_success,
)
from .schema import rejected_schema
from .shardio import atomic_write_json, read_parquet, sha256_file, write_parquet
from .stage import GlobalContext, GlobalStage, MapStage, SourceStage, Stage, load_stage_class


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def code_version() -> str:
    rev = ""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{__version__}+{rev}" if rev else __version__


class ShardWorker:
    """Runs one map stage on one shard at a time; the stage is set up once per worker."""

    def __init__(self, stage_type: str, config: dict, stage_name: str, out_dir: str, chash: str):
        cls = load_stage_class(stage_type)
        self.stage: Stage = cls(cls.Config.model_validate(config), stage_name)
        self.stage.setup()
        self.stage_name = stage_name
        self.out_dir = Path(out_dir)
        self.chash = chash

    def __call__(self, task: dict) -> dict:
        t0 = time.perf_counter()
        i, inp = task["index"], task["input"]
        if isinstance(self.stage, SourceStage):
            res = self.stage.process_source(inp)
            n_in = res.n_input if res.n_input is not None else res.kept.num_rows + res.rejected.num_rows
        else:
            table = read_parquet(inp)
            res = self.stage.process(table)  # type: ignore[attr-defined]
            n_in = table.num_rows
        rejected = res.rejected if res.rejected is not None else rejected_schema(res.kept.schema).empty_table()
        check_conservation(n_in, res.kept.num_rows, rejected.num_rows, f"stage {self.stage_name} shard {i} ({inp})")
        name = shard_name(i)
        kept_info = write_parquet(res.kept, self.out_dir / f"{name}.parquet")
        rej_info = write_parquet(rejected, self.out_dir / "rejected" / f"{name}.parquet")
        reasons = Counter(rejected.column("reason").to_pylist()) if rejected.num_rows else Counter()
        marker = {
            "index": i,
            "config_hash": self.chash,
            "input": {"path": inp, "rows": n_in, "sha256": task["input_sha"]},
            "outputs": {"kept": kept_info, "rejected": rej_info},
            "kept": res.kept.num_rows,
            "rejected": rejected.num_rows,
            "reasons": dict(sorted(reasons.items())),
            "stats": res.stats,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        atomic_write_json(self.out_dir / SHARDS_DIR / f"{name}.json", marker)
        return marker


def _clean_tmp(stage_dir: Path) -> None:
    for p in stage_dir.rglob("*.tmp"):
        p.unlink(missing_ok=True)


def _digest(items: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, sha in items:
        h.update(f"{name}\t{sha}\n".encode())
    return h.hexdigest()[:16]


def upstream_shards(run_dir: Path, input_stage: str) -> list[tuple[Path, str]]:
    """Kept shards of a finished stage with their checksums (from its manifest)."""
    sdir = run_dir / input_stage
    if read_success(sdir) is None:
        raise StageStateError(f"input stage {input_stage!r} has not finished in {run_dir} (no _SUCCESS)")
    man = read_manifest(sdir) or {}
    known = {Path(o["path"]).name: o["sha256"] for o in man.get("outputs", [])}
    out = []
    for p in sorted(sdir.glob("part-*.parquet")):
        out.append((p, known.get(p.name) or sha256_file(p)))
    return out


class Runner:
    """Runs the stages of one pipeline into one run directory."""

    def __init__(
        self,
        pipeline: str | Path | dict | PipelineSpec,
        run_dir: str | Path,
        executor: str | None = None,
        workers: int | None = None,
        force: bool = False,
        log=print,
    ):
        if isinstance(pipeline, PipelineSpec):
            self.spec, self.where = pipeline, "<pipeline>"
        elif isinstance(pipeline, dict):
            self.spec, self.where = parse_pipeline(pipeline, "<pipeline dict>"), "<pipeline dict>"
        else:
            self.spec, self.where = load_pipeline(pipeline), str(pipeline)
        self.run_dir = Path(run_dir)
        self.executor_name = executor or self.spec.executor
        self.workers = workers or self.spec.workers
        self.force = force
        self.log = log
        self._executor: Executor | None = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = get_executor(self.executor_name, self.workers)
        return self._executor

    def run(self, stages: list[str] | None = None) -> dict[str, dict]:
        unknown = [s for s in stages or [] if s not in self.spec.stages]
        if unknown:
            raise ConfigError(f"{self.where}: no stage named {', '.join(unknown)} (have {', '.join(self.spec.stages)})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.run_dir / "_pipeline.json",
            {"pipeline": self.spec.pipeline, "source": self.where, "stages": list(self.spec.stages)},
        )
        results = {}
        for name, st in self.spec.stages.items():
            if stages and name not in stages:
                continue
            results[name] = self.run_stage(name, st)
        return results

    def _make_stage(self, name: str, st: StageSpec) -> tuple[type[Stage], Any, str]:
        stype = st.type or name
        cls = load_stage_class(stype)
        cfg = build_config(cls.Config, st.config, f"config of stage {name!r} in {self.where}")
        chash = config_hash({"type": stype, "version": cls.version, "config": cfg.model_dump(mode="json")})
        return cls, cfg, chash

    def _inputs(self, name: str, st: StageSpec, stage: Stage) -> list[tuple[Path, str]]:
        if isinstance(stage, SourceStage):
            if st.input is None or isinstance(st.input, str):
                raise ConfigError(f"{self.where}: source stage {name!r} needs `input: {{paths: [...]}}`")
            files = stage.list_inputs(list(st.input.paths))
            if not files:
                raise ConfigError(f"{self.where}: stage {name!r}: no input files under {list(st.input.paths)}")
            return [(Path(f), stage.checksum(f)) for f in files]
        if not isinstance(st.input, str):
            raise ConfigError(f"{self.where}: stage {name!r} needs `input: <earlier stage name>`")
        return upstream_shards(self.run_dir, st.input)

    def run_stage(self, name: str, st: StageSpec) -> dict:
        cls, cfg, chash = self._make_stage(name, st)
        stage = cls(cfg, name)
        stage_dir = self.run_dir / name
        inputs = self._inputs(name, st, stage)
        deps = [(p.name, sha) for p, sha in inputs]
        if isinstance(stage, GlobalStage):
            deps += stage.extra_inputs(self.run_dir)
        digest = _digest(deps)
        done = read_success(stage_dir)
        if done is not None:
            if done.get("config_hash") == chash and done.get("inputs_digest") == digest:
                self.log(f"[{name}] already finished: skipped")
                return read_manifest(stage_dir) or {}
            if not self.force:
                raise StageStateError(
                    f"stage {name!r} in {self.run_dir} finished with a different config or input; "
                    f"rerun with --force to redo it, or use another run directory"
                )
            shutil.rmtree(stage_dir)
        elif self.force and stage_dir.exists():
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        _clean_tmp(stage_dir)
        started, t0 = _now(), time.perf_counter()
        if isinstance(stage, GlobalStage):
            body = self._run_global(name, st, stage, stage_dir, inputs)
        else:
            body = self._run_map(name, cfg, chash, stage, stage_dir, inputs)
        seconds = time.perf_counter() - t0
        manifest = {
            "stage": name,
            "type": cls.name,
            "stage_version": cls.version,
            "code_version": code_version(),
            "config": cfg.model_dump(mode="json"),
            "config_hash": chash,
            "executor": self.executor_name,
            "workers": self.workers,
            "inputs": [{"path": str(p), "sha256": sha} for p, sha in inputs],
            "started_at": started,
            "finished_at": _now(),
            **body,
        }
        manifest.setdefault("timings", {})
        manifest["timings"]["seconds"] = round(seconds, 3)
        if manifest.get("input_rows"):
            manifest["timings"]["docs_per_s"] = round(manifest["input_rows"] / max(seconds, 1e-9), 2)
        write_manifest(stage_dir, manifest)
        write_success(stage_dir, chash, digest)
        self._summary(name, manifest)
        return manifest

    def _run_map(self, name, cfg, chash, stage, stage_dir, inputs) -> dict:
        markers: dict[int, dict] = {}
        tasks = []
        for i, (p, sha) in enumerate(inputs):
            m = marker_valid(stage_dir / SHARDS_DIR / f"{shard_name(i)}.json", chash, sha)
            if m is not None:
                markers[i] = m
            else:
                tasks.append({"index": i, "input": str(p), "input_sha": sha})
        if markers:
            self.log(f"[{name}] resuming: {len(markers)} of {len(inputs)} shards already done")
        init = (cls_type(stage), cfg.model_dump(mode="json"), name, str(stage_dir), chash)
        for _, marker in self.executor.map(ShardWorker, init, tasks, desc=name):
            markers[marker["index"]] = marker
        ordered = [markers[i] for i in range(len(inputs))]
        n_in = sum(m["input"]["rows"] for m in ordered)
        n_kept = sum(m["kept"] for m in ordered)
        n_rej = sum(m["rejected"] for m in ordered)
        check_conservation(n_in, n_kept, n_rej, f"stage {name}")
        reasons: Counter = Counter()
        for m in ordered:
            reasons.update(m["reasons"])
        return {
            "input_rows": n_in,
            "kept_rows": n_kept,
            "rejected_rows": n_rej,
            "reasons": dict(sorted(reasons.items())),
            "conservation": {"ok": True, "input": n_in, "kept": n_kept, "rejected": n_rej},
            "shards": [
                {"index": m["index"], "input": m["input"], "kept": m["kept"], "rejected": m["rejected"]}
                for m in ordered
            ],
            "outputs": [m["outputs"]["kept"] for m in ordered],
            "rejected_outputs": [m["outputs"]["rejected"] for m in ordered],
            "stats": sum_stats([m["stats"] for m in ordered]),
            "timings": {"shard_seconds": round(sum(m["seconds"] for m in ordered), 3)},
        }

    def _run_global(self, name, st, stage: GlobalStage, stage_dir, inputs) -> dict:
        stage.setup()
        ctx = GlobalContext(
            stage_name=name,
            input_shards=[p for p, _ in inputs],
            input_dir=(self.run_dir / st.input) if isinstance(st.input, str) else None,
            out_dir=stage_dir,
            run_dir=self.run_dir,
            executor=self.executor,
            workers=self.workers,
        )
        body = dict(stage.run(ctx))
        if body.get("conservation") == "n/a":
            if "accounting" not in body:
                raise ConfigError(f"stage {name!r} opted out of conservation without an 'accounting' entry")
        else:
            for k in ("input_rows", "kept_rows", "rejected_rows"):
                if k not in body:
                    raise ConfigError(f"stage {name!r} returned no {k!r} in its manifest body")
            check_conservation(body["input_rows"], body["kept_rows"], body["rejected_rows"], f"stage {name}")
            body["conservation"] = {
                "ok": True,
                "input": body["input_rows"],
                "kept": body["kept_rows"],
                "rejected": body["rejected_rows"],
            }
        body.setdefault("outputs", [
            {"path": str(p), "sha256": sha256_file(p)} for p in sorted(stage_dir.glob("part-*.parquet"))
        ])
        return body

    def _summary(self, name: str, m: dict) -> None:
        if "input_rows" in m:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(m.get("reasons", {}).items(), key=lambda kv: -kv[1]))
            rate = m.get("timings", {}).get("docs_per_s")
            self.log(
                f"[{name}] in={m['input_rows']} kept={m['kept_rows']} rejected={m['rejected_rows']}"
                + (f" ({reasons})" if reasons else "")
                + (f" {rate} docs/s" if rate else "")
            )
        else:
            self.log(f"[{name}] done")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()


def cls_type(stage: Stage) -> str:
    """The stage type string that ``load_stage_class`` maps back to the stage's class."""
    mod = type(stage).__module__
    if not mod.startswith("stages."):
        raise ConfigError(f"stage class {type(stage).__name__} must live in the stages package")
    return mod[len("stages."):]


def run_pipeline(
    pipeline: str | Path | dict | PipelineSpec,
    run_dir: str | Path,
    executor: str | None = None,
    workers: int | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    log=print,
) -> dict[str, dict]:
    """Run (or resume) a pipeline into ``run_dir``; returns each stage's manifest."""
    runner = Runner(pipeline, run_dir, executor=executor, workers=workers, force=force, log=log)
    try:
        return runner.run(stages)
    finally:
        runner.close()
