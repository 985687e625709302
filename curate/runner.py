"""The DAG runner: validates a pipeline, runs each stage through an executor, writes manifests.

The whole pipeline is validated (:func:`curate.pipeline.validate`) before the first stage
runs. Each stage then runs through the phase engine (:mod:`curate.phases`): a map or source
stage is one phase with a task per input shard (the worker writes the shard with
:func:`curate.shards.write_shard`; markers in ``_shards/``); a global stage runs its own
phases. A finished stage (``_SUCCESS``) is trusted only after every file it recorded still
has its size and checksum; a changed file is reported and its stage resumed, which redoes only
the work whose outputs changed. A run directory on a storage URI is worked on in a local mirror
(:class:`curate.storage.RemoteRun`): each stage pulls what it reads, the phase engine pushes
what each task wrote, and the stage folder goes up at the end, ``_SUCCESS`` last.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, storage
from .config import PipelineSpec, load_pipeline, parse_pipeline
from .errors import ConfigError, CurateError, ShardError, StageStateError
from .executors import Executor, get_executor
from .manifest import (
    SHARDS_DIR,
    check_conservation,
    SUCCESS,
    WORK_DIR,
    read_manifest,
    read_success,
    remove_unrecorded,
    shard_name,
    sum_stats,
    verify_finished,
    write_manifest,
    write_success,
)
from .phases import Phases, stable_hash
from .pipeline import PlannedStage, check_paths, upstream_of, validate
from .shardio import atomic_write_json, read_parquet, sha256_file
from .shards import sum_shards, write_shard
from .stage import GlobalContext, GlobalResult, GlobalStage, SourceStage, Stage, load_stage_class

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def code_version() -> str:
    env = os.environ.get("CURATE_CODE_VERSION")
    if env:
        return env
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
    """Runs one map or source stage on one shard at a time; set up once per worker."""

    def __init__(self, stage_type: str, config: dict, stage_name: str, out_dir: str):
        cls = load_stage_class(stage_type)
        self.stage: Stage = cls(cls.Config.model_validate(config), stage_name)
        self.stage.setup()
        self.stage_name = stage_name
        self.out_dir = Path(out_dir)

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
        marker = write_shard(
            self.out_dir, i, res.kept, res.rejected, n_in,
            where=f"stage {self.stage_name} shard {i} ({inp})",
            input_info={"path": inp, "sha256": task["input_sha"]},
            stats=res.stats,
        )
        marker["seconds"] = round(time.perf_counter() - t0, 3)
        return marker


def _clean_tmp(stage_dir: Path) -> None:
    """Remove what an interrupted write left: ``*.tmp`` files and folders."""
    for p in sorted(stage_dir.rglob("*.tmp"), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _digest(items: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, sha in items:
        h.update(f"{name}\t{sha}\n".encode())
    return h.hexdigest()[:16]


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
        where: str | None = None,
    ):
        if isinstance(pipeline, PipelineSpec):
            self.spec, self.where = pipeline, where or "<pipeline>"
        elif isinstance(pipeline, dict):
            self.where = where or "<pipeline dict>"
            self.spec = parse_pipeline(pipeline, self.where)
        else:
            self.spec, self.where = load_pipeline(pipeline), str(pipeline)
        self.plan = validate(self.spec, self.where)
        self.by_name = {p.name: p for p in self.plan}
        # a URI is worked on in a local mirror (curate.storage.RemoteRun); a path is itself
        self.store = storage.open_run(run_dir)
        self.run_dir = self.store.local
        self._pulled: set[str] = set()
        self.executor_name = executor or self.spec.executor
        self.workers = workers or self.spec.workers
        self.force = force
        self.log = log
        if self.store.remote:  # messages name the run's URI, not the mirror
            root, uri = str(self.store.local), self.store.uri
            self.log = lambda m: log(str(m).replace(root, uri))
        self._executor: Executor | None = None
        self._verified: set[str] = set()

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = get_executor(self.executor_name, self.workers, self.spec.max_task_retries)
        return self._executor

    def run(self, stages: list[str] | None = None) -> dict[str, dict]:
        unknown = [s for s in stages or [] if s not in self.by_name]
        if unknown:
            raise ConfigError(f"{self.where}: no stage named {', '.join(unknown)} (have {', '.join(self.by_name)})")
        check_paths(self.plan, self.where, [p.name for p in self.plan if not stages or p.name in stages])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.run_dir / "_pipeline.json",
            {"pipeline": self.spec.pipeline, "source": self.where, "stages": [p.name for p in self.plan]},
        )
        self.store.push([self.run_dir / "_pipeline.json"])
        results = {}
        for p in self.plan:
            if stages and p.name not in stages:
                continue
            try:
                results[p.name] = self.run_stage(p)
            except OSError as e:
                raise ShardError(_os_error_line(p.name, self.run_dir / p.name, e)) from e
        return results

    # ------------------------------------------------------------------ inputs
    def upstream_shards(self, input_stage: str) -> list[tuple[Path, str]]:
        """Kept shards of a finished stage with their checksums, after verifying the stage."""
        sdir = self.run_dir / input_stage
        done = read_success(sdir)
        if done is None:
            raise StageStateError(f"input stage {input_stage!r} has not finished in {self.store.uri} (no _SUCCESS)")
        if input_stage not in self._verified:
            changes = verify_finished(sdir, done)
            if changes:
                raise StageStateError(
                    f"input stage {input_stage!r} changed since it finished ({changes[0]}"
                    + (f"; +{len(changes) - 1} more" if len(changes) > 1 else "")
                    + f"): rerun that stage first (curate run ... --stage {input_stage})"
                )
            self._verified.add(input_stage)
        man = read_manifest(sdir) or {}
        known = {Path(o["path"]).name: o["sha256"] for o in man.get("outputs", []) if "sha256" in o}
        return [(p, known.get(p.name) or sha256_file(p)) for p in sorted(sdir.glob("part-*.parquet"))]

    def _inputs(self, p: PlannedStage, stage: Stage) -> dict[str, list[tuple[Path, str]]]:
        if isinstance(stage, SourceStage):
            paths = list(p.spec.input.paths)  # type: ignore[union-attr]
            files = stage.list_inputs(paths)
            if not files:
                raise ConfigError(f"{self.where}: stage {p.name!r}: no input files under {paths}")
            return {"": [(storage.as_path(f), stage.checksum(f)) for f in files]}
        return {s: self.upstream_shards(s) for s in p.spec.input_stages}

    # ------------------------------------------------------------------ stages
    def _pull(self, names: list[str]) -> None:
        """Bring these stages of a remote run into the mirror (once per run)."""
        todo = [n for n in dict.fromkeys(names) if n not in self._pulled]
        self.store.pull(todo)
        self._pulled.update(todo)

    def run_stage(self, p: PlannedStage) -> dict:
        name, chash = p.name, p.config_hash
        stage = p.make()
        stage_dir = self.run_dir / name
        self._pull([name, *p.spec.input_stages, *p.refs])
        done = read_success(stage_dir)
        if done is not None and done.get("config_hash") == chash and name not in self._verified:
            changes = verify_finished(stage_dir, done)
            if changes:
                for c in changes[:5]:
                    self.log(f"[{name}] {c}")
                if len(changes) > 5:
                    self.log(f"[{name}] ... and {len(changes) - 5} more changes")
                self.log(f"[{name}] finished stage changed on disk: resuming it (only changed work is redone)")
                remove_unrecorded(stage_dir, done)
                (stage_dir / SUCCESS).unlink()
                done = None
            else:
                self._verified.add(name)
        inputs = self._inputs(p, stage)
        flat = [x for v in inputs.values() for x in v]
        deps = [(storage.name_of(path) if len(inputs) == 1 else f"{k}/{storage.name_of(path)}", sha)
                for k, v in inputs.items() for path, sha in v]
        if isinstance(stage, GlobalStage):
            deps += stage.extra_inputs(self.run_dir)
        digest = _digest(deps)
        if done is not None:
            if done.get("config_hash") == chash and done.get("inputs_digest") == digest:
                self.log(f"[{name}] already finished: skipped")
                return read_manifest(stage_dir) or {}
            if not self.force:
                raise StageStateError(
                    f"stage {name!r} in {self.store.uri} finished with a different config or input; "
                    f"rerun with --force to redo it, or use another run directory"
                )
            shutil.rmtree(stage_dir)
        elif self.force and stage_dir.exists():
            shutil.rmtree(stage_dir)
        self._verified.discard(name)
        self.store.sync(stage_dir)  # what was removed above goes on the remote side too
        stage_dir.mkdir(parents=True, exist_ok=True)
        _clean_tmp(stage_dir)
        started, t0 = _now(), time.perf_counter()
        if isinstance(stage, GlobalStage):
            phases = Phases(stage_dir, stable_hash(chash, digest), self.executor, name, self.log, store=self.store)
            body = self._run_global(p, stage, stage_dir, inputs, phases)
        else:
            phases = Phases(stage_dir, chash, self.executor, name, self.log, store=self.store)
            body = self._run_map(p, stage_dir, flat, phases)
        seconds = time.perf_counter() - t0
        manifest = {
            "stage": name,
            "type": p.type,
            "stage_version": p.cls.version,
            "code_version": code_version(),
            "config": p.config.model_dump(mode="json"),
            "config_hash": chash,
            "executor": self.executor_name,
            "workers": self.workers,
            "inputs": [{"path": str(path), "sha256": sha} for path, sha in flat],
            "started_at": started,
            "finished_at": _now(),
            **body,
        }
        events = self.executor.take_events() if hasattr(self.executor, "take_events") else []
        if events:
            manifest["retries"] = events
        manifest.setdefault("timings", {})
        manifest["timings"]["seconds"] = round(seconds, 3)
        manifest["timings"]["phases"] = phases.timings
        if any(phases.skipped.values()):
            manifest["resumed"] = {k: v for k, v in phases.skipped.items() if v}
        if manifest.get("input_rows"):
            manifest["timings"]["docs_per_s"] = round(manifest["input_rows"] / max(seconds, 1e-9), 2)
        write_manifest(stage_dir, self.store.logical(manifest))
        write_success(stage_dir, chash, digest)
        if not getattr(p.config, "keep_work", False):
            shutil.rmtree(stage_dir / WORK_DIR, ignore_errors=True)
        self.store.sync(stage_dir)  # _manifest.json and _SUCCESS last, then the removed _work/
        self._verified.add(name)
        self._summary(name, manifest)
        return manifest

    def _run_map(self, p: PlannedStage, stage_dir: Path, inputs: list[tuple[Path, str]], phases: Phases) -> dict:
        tasks = [{"index": i, "input": str(path), "input_sha": sha} for i, (path, sha) in enumerate(inputs)]
        init = (p.type, p.config.model_dump(mode="json"), p.name, str(stage_dir))
        markers = phases.map("shards", ShardWorker, init, tasks, marker_dir=stage_dir / SHARDS_DIR,
                             marker_names=[shard_name(i) for i in range(len(tasks))])
        body = sum_shards(markers, f"stage {p.name}")
        body["conservation"] = {"ok": True, "input": body["input_rows"], "kept": body["kept_rows"],
                                "rejected": body["rejected_rows"]}
        body["stats"] = sum_stats([m["stats"] for m in markers])
        body["timings"] = {"shard_seconds": round(sum(m.get("seconds", 0.0) for m in markers), 3)}
        return body

    def _run_global(self, p: PlannedStage, stage: GlobalStage, stage_dir: Path,
                    inputs: dict[str, list[tuple[Path, str]]], phases: Phases) -> dict:
        names = p.spec.input_stages
        return run_global_stage(
            stage, {n: [path for path, _ in inputs[n]] for n in names}, stage_dir, self.executor,
            workers=self.workers, run_dir=self.run_dir, phases=phases, cleanup=False,
        )

    def _summary(self, name: str, m: dict) -> None:
        if m.get("input_rows") or m.get("conservation") != "n/a":
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
        self.store.close()


def run_global_stage(
    stage: GlobalStage,
    inputs: dict[str, list[Path]] | list[Path],
    out_dir: str | Path,
    executor: Executor,
    workers: int | None = None,
    run_dir: str | Path | None = None,
    phases: Phases | None = None,
    log=lambda *_: None,
    cleanup: bool = True,
) -> dict:
    """Run one global stage and return its manifest body (counts, outputs, stage figures).

    The runner calls this inside a pipeline; tests and benchmarks call it directly on shards
    (``inputs`` a list of shard paths, or ``{stage name: [paths]}``). ``cleanup`` removes
    ``_work/`` at the end unless the config says ``keep_work``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(inputs, dict):
        inputs = {"input": [Path(x) for x in inputs]}
    names = list(inputs)
    first = inputs[names[0]] if names else []
    if phases is None:
        phases = Phases(out_dir, stable_hash(stage.name, stage.config.model_dump(mode="json")), executor,
                        stage.stage_name, log)
    stage.setup()
    ctx = GlobalContext(
        stage_name=stage.stage_name,
        input_shards=list(first),
        input_dir=Path(first[0]).parent if first else None,
        out_dir=out_dir,
        run_dir=Path(run_dir) if run_dir is not None else out_dir.parent,
        executor=executor,
        workers=workers or executor.workers,
        phases=phases,
        inputs={n: list(v) for n, v in inputs.items()},
        input_dirs={n: (Path(run_dir) / n if run_dir is not None else Path(v[0]).parent if v else out_dir)
                    for n, v in inputs.items()},
    )
    res = stage.run(ctx)
    if not isinstance(res, GlobalResult):
        raise ConfigError(f"stage {stage.stage_name!r}: run() returned {type(res).__name__}, not a GlobalResult")
    body: dict[str, Any] = {
        "input_rows": res.input_rows,
        "kept_rows": res.kept_rows,
        "rejected_rows": res.rejected_rows,
        "reasons": dict(sorted(res.reasons.items())),
    }
    if res.accounting is not None:
        body["conservation"] = "n/a"
        body["accounting"] = res.accounting
    else:
        check_conservation(res.input_rows, res.kept_rows, res.rejected_rows, f"stage {stage.stage_name}")
        body["conservation"] = {"ok": True, "input": res.input_rows, "kept": res.kept_rows,
                                "rejected": res.rejected_rows}
    if res.shards:
        body["shards"] = res.shards
    body["outputs"] = res.outputs
    if res.rejected_outputs:
        body["rejected_outputs"] = res.rejected_outputs
    body.update(res.extra)
    body["timings"] = {"phases": dict(phases.timings)}
    if cleanup and not getattr(stage.config, "keep_work", False):
        shutil.rmtree(out_dir / WORK_DIR, ignore_errors=True)
    return body


def _os_error_line(stage: str, out: Path, e: OSError) -> str:
    what = os.strerror(e.errno) if e.errno else str(e)
    target = e.filename or out
    hint = {28: "free space on that file system or use another --run directory",
            30: "the run directory is read-only: use a writable --run directory",
            13: "check the permissions of the run directory"}.get(e.errno or 0, "see the message above")
    return f"stage {stage!r}: cannot write {target}: {what} ({hint})"


def run_pipeline(
    pipeline: str | Path | dict | PipelineSpec,
    run_dir: str | Path,
    executor: str | None = None,
    workers: int | None = None,
    stages: list[str] | None = None,
    force: bool = False,
    log=print,
    where: str | None = None,
) -> dict[str, dict]:
    """Validate, then run (or resume) a pipeline into ``run_dir``; returns each stage's manifest."""
    runner = Runner(pipeline, run_dir, executor=executor, workers=workers, force=force, log=log, where=where)
    try:
        return runner.run(stages)
    finally:
        runner.close()


__all__ = ["Runner", "ShardWorker", "run_pipeline", "code_version", "upstream_of", "CurateError"]
