"""Submit a curate pipeline to a Ray cluster as a job (``make submit``; see README).

What it adds to a plain ``ray job submit``:

* every input path of the pipeline's source stages, and the run directory, made absolute
  (relative ones resolve against the directory you submit from; storage URIs such as
  ``s3://`` stay as they are), so that they point to the same files on every node: they
  must be on storage that every node mounts at that path. ``--input STAGE=PATH`` replaces
  a source stage's inputs. The rewritten pipeline travels with the working directory
  (``.curate-job/<name>-<id>.yaml``, removed here once submitted) and the job runs it;
* this checkout as the job's working directory (Ray uploads it, skipping what .gitignore
  lists, which is why data paths must be absolute) and the code version of this checkout
  in ``CURATE_CODE_VERSION`` (``.git`` is not uploaded, the manifests still name the
  revision);
* ``RAY_AUTH_MODE=token`` when a Ray token is at hand (``RAY_AUTH_TOKEN``,
  ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and the mode is not set: Ray 2.60 turns
  token authentication on for a head started where such a token exists, and the ``ray job``
  CLI then needs the mode set explicitly.

The nodes need the project's dependencies and ``lmplz`` (train-lm runs on the job's driver,
on the head node): the image of ``docker/Dockerfile``, or ``make setup lmplz`` on each node
with Ray started from that virtualenv.

Usage: ``python -m ray_jobs.submit --address http://HEAD:8265 PIPELINE --run RUN
[--input STAGE=PATH]... [--no-wait] [-- curate run options]``
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from curate.config import read_yaml_mapping
from curate.errors import ConfigError
from curate.runner import code_version

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ENV = Path(__file__).resolve().parent / "runtime_env.yaml"
JOB_DIR = ".curate-job"  # in the working directory: uploaded with it (not in .gitignore)


def absolute_pipeline(data: dict, base: Path, inputs: dict[str, list[str]]) -> dict:
    """A copy of pipeline ``data`` whose source-stage input paths are absolute.

    Args:
        data: the pipeline mapping (as read from YAML).
        base: what relative paths resolve against.
        inputs: stage name -> paths that replace that stage's configured inputs.
    """
    out = json.loads(json.dumps(data))
    stages = out.get("stages") or {}
    unknown = sorted(set(inputs) - set(stages))
    if unknown:
        raise ConfigError(f"--input names no stage of the pipeline: {', '.join(unknown)}")
    for name, st in stages.items():
        given = inputs.get(name)
        if given is not None:
            st["input"] = {"paths": given}
        inp = st.get("input") if isinstance(st, dict) else None
        if isinstance(inp, dict) and isinstance(inp.get("paths"), list):
            inp["paths"] = [p if "://" in p else str((base / p).resolve()) for p in map(str, inp["paths"])]
    return out


def auth_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``RAY_AUTH_MODE=token`` added when a token exists and no mode is set."""
    if env.get("RAY_AUTH_MODE"):
        return env
    token_file = env.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if env.get("RAY_AUTH_TOKEN") or Path(token_file).is_file():
        return {**env, "RAY_AUTH_MODE": "token"}
    return env


def runtime_env() -> dict:
    """ray_jobs/runtime_env.yaml plus the code version of this checkout."""
    env = yaml.safe_load(RUNTIME_ENV.read_text(encoding="utf-8")) or {}
    env.setdefault("env_vars", {})["CURATE_CODE_VERSION"] = code_version()
    return env


def _parse_inputs(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        stage, sep, path = item.partition("=")
        if not sep or not stage or not path:
            raise ConfigError(f"--input takes STAGE=PATH, got {item!r}")
        out.setdefault(stage, []).append(path)
    return out


def build_command(args: argparse.Namespace, extra: list[str]) -> tuple[list[str], Path]:
    """The ``ray job submit`` command line, and the rewritten pipeline it runs (written
    under ``JOB_DIR`` of this checkout; the caller removes it once submitted)."""
    base = Path.cwd()
    run = args.run if "://" in args.run else str((base / args.run).resolve())
    data = absolute_pipeline(read_yaml_mapping(args.pipeline, "pipeline"), base, _parse_inputs(args.input))
    rel = f"{JOB_DIR}/{Path(args.pipeline).stem}-{uuid.uuid4().hex[:8]}.yaml"
    job_pipeline = ROOT / rel
    job_pipeline.parent.mkdir(parents=True, exist_ok=True)
    job_pipeline.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    entry = ["python", "-m", "curate.cli", "run", rel, "--run", run, *extra]
    ray = Path(sys.executable).with_name("ray")
    cmd = [str(ray) if ray.exists() else "ray", "job", "submit", "--address", args.address,
           "--working-dir", str(ROOT), "--runtime-env-json", json.dumps(runtime_env())]
    if args.submission_id:
        cmd += ["--submission-id", args.submission_id]
    if args.no_wait:
        cmd.append("--no-wait")
    return [*cmd, "--", *map(shlex.quote, entry)], job_pipeline


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    ap = argparse.ArgumentParser(prog="python -m ray_jobs.submit", description=__doc__.split("\n\n")[0])
    ap.add_argument("pipeline", help="pipeline YAML, e.g. manifests/demo.yaml")
    ap.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                    help="the cluster's job server, http://HEAD:8265 (default: RAY_ADDRESS)")
    ap.add_argument("--run", required=True, help="run directory on storage every node reaches")
    ap.add_argument("--input", action="append", default=[], metavar="STAGE=PATH",
                    help="replace a source stage's inputs (repeatable)")
    ap.add_argument("--submission-id", default=None, help="the job's id (default: Ray chooses)")
    ap.add_argument("--no-wait", action="store_true", help="return once submitted")
    args = ap.parse_args(argv)
    if not args.address:
        print("error: no cluster address: pass --address or set RAY_ADDRESS (http://HEAD:8265)", file=sys.stderr)
        return 2
    try:
        cmd, job_pipeline = build_command(args, extra)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"submitting {args.pipeline} (as {job_pipeline.relative_to(ROOT)}) to {args.address}",
          file=sys.stderr, flush=True)
    try:
        return subprocess.run(cmd, env=auth_env(dict(os.environ))).returncode
    finally:
        job_pipeline.unlink(missing_ok=True)
        try:
            job_pipeline.parent.rmdir()
        except OSError:  # another submission's file is still there
            pass


if __name__ == "__main__":
    sys.exit(main())
