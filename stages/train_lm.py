"""train-lm: one KenLM n-gram model per language from a reference set (CCNet's approach).

The reference set is either the documents of the input stage whose ``source`` is
``reference_source`` (e.g. ``wiki``), grouped by their ``lang`` column, or text files named
per language in ``reference_paths`` (one paragraph per line). The text is normalised and
tokenised by :mod:`filters.kenlm_lm` (the scorer does the same), ``lmplz`` estimates a
modified-Kneser-Ney model and ``build_binary`` turns it into a binary model:

* phase ``text`` (a map, one task per input shard or reference file): select, normalise and
  tokenise, write ``_work/<lang>/<task>.txt``;
* phase ``lmplz-<lang>`` (a driver step per language): ``lmplz`` reads the language's files
  on stdin, then ``build_binary``. A rerun after a kill resumes at the first unfinished
  phase (a half-written sort folder of a killed ``lmplz`` is cleared first).

Outputs: ``models/<lang>.bin`` and ``models/models.json`` (language -> file, checksum,
training figures), which the ``perplexity`` stage finds through its ``models_from`` key.
The stage writes no document shards: later stages read the documents of their own input.

``lmplz`` and ``build_binary`` come from ``make lmplz`` (installed into the virtualenv); the
config can point at other copies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curate.config import StageConfig
from curate.errors import ConfigError, CurateError
from curate.shardio import atomic_write_json, file_info, read_parquet, sha256_file
from curate.stage import GlobalContext, GlobalResult, GlobalStage
from filters.kenlm_lm import prepare_lines

MODELS_DIR = "models"
MODELS_INDEX = "models.json"


class TrainLmError(CurateError):
    """``lmplz`` or ``build_binary`` failed (the message carries the tail of its log)."""


def find_tool(name: str, configured: str | None = None) -> str:
    """Path of a KenLM program: ``configured``, else the virtualenv's ``bin/``, else ``PATH``."""
    if configured:
        if not os.access(configured, os.X_OK):
            raise ConfigError(f"{name}: {configured} is not an executable file")
        return configured
    for cand in (Path(sys.prefix) / "bin" / name, Path(sys.executable).parent / name):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which(name)
    if found:
        return found
    raise ConfigError(f"{name} not found in {Path(sys.prefix) / 'bin'} or on PATH: run `make lmplz`")


class TrainLmConfig(StageConfig):
    """Config of the train-lm stage.

    Attributes:
        reference_source: train on input documents whose ``source`` column equals this.
        reference_paths: language -> text file (one paragraph per line), instead of
            ``reference_source``; relative paths resolve against the current directory.
        langs: languages to train (others are skipped); None trains every language with at
            least ``min_docs`` reference documents.
        lang_column: the language column of the input shards.
        default_lang: language of documents whose language column is absent or null.
        min_docs: languages with fewer reference documents (or lines of a file) get no model.
        order: n-gram order (KenLM here supports up to 6).
        memory: ``lmplz -S`` (memory for sorting: ``1G``, ``20%``).
        prune: ``lmplz --prune`` thresholds per order (e.g. ``[0, 0, 1]``); empty: no pruning.
        binary_type: ``build_binary`` data structure (``probing`` is faster, ``trie`` smaller).
        lmplz / build_binary: paths of the programs (default: the virtualenv's, then PATH).
    """

    reference_source: str | None = None
    reference_paths: dict[str, str] = {}
    langs: list[str] | None = None
    lang_column: str = "lang"
    default_lang: str | None = None
    min_docs: int = Field(default=10, ge=1)
    order: int = Field(default=5, ge=1, le=6)
    memory: str = "1G"
    prune: list[int] = []
    binary_type: str = Field(default="probing", pattern="^(probing|trie)$")
    lmplz: str | None = None
    build_binary: str | None = None

    @model_validator(mode="after")
    def _one_reference(self):
        if bool(self.reference_source) == bool(self.reference_paths):
            raise ValueError("set exactly one of reference_source (a source such as 'wiki') or reference_paths")
        return self


class ReferenceWorker:
    """Phase 1: write the normalised, tokenised reference text of one shard or file."""

    def __init__(self, work_dir: str, cfg: dict):
        self.work = Path(work_dir)
        self.cfg = TrainLmConfig.model_validate(cfg)

    def _write(self, lang: str, name: str, lines_of_docs) -> dict:
        path = self.work / lang / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        docs = lines = tokens = 0
        with open(path, "w", encoding="utf-8") as f:
            for doc_lines in lines_of_docs:
                if not doc_lines:
                    continue
                docs += 1
                for ln in doc_lines:
                    f.write(ln)
                    f.write("\n")
                    lines += 1
                    tokens += ln.count(" ") + 1
        return {"docs": docs, "lines": lines, "tokens": tokens, "file": file_info(path)}

    def __call__(self, task: dict) -> dict:
        return _with_files(self._counts(task))

    def _counts(self, task: dict) -> dict:
        cfg = self.cfg
        if task["kind"] == "file":
            lang, path = task["lang"], task["path"]
            with open(path, encoding="utf-8", errors="replace") as fh:
                counts = self._write(lang, task["name"], (prepare_lines(ln) for ln in fh))
            return {lang: counts}
        has_lang = cfg.lang_column in pq.read_schema(task["path"]).names
        cols = ["text", "source"] + ([cfg.lang_column] if has_lang else [])
        table = read_parquet(task["path"], columns=cols)
        texts = table.column("text").to_pylist()
        sources = table.column("source").to_pylist()
        langs = table.column(cfg.lang_column).to_pylist() if has_lang else [None] * len(texts)
        by_lang: dict[str, list[str]] = {}
        for text, src, lang in zip(texts, sources, langs):
            lang = lang or cfg.default_lang
            if src != cfg.reference_source or not text or lang is None:
                continue
            if cfg.langs is not None and lang not in cfg.langs:
                continue
            by_lang.setdefault(lang, []).append(text)
        return {
            lang: self._write(lang, task["name"], (prepare_lines(t) for t in docs))
            for lang, docs in sorted(by_lang.items())
        }


def _with_files(by_lang: dict[str, dict]) -> dict:
    """A phase result: counts per language, and the reference files written (for resume)."""
    files = [c.pop("file") for c in by_lang.values()]
    return {"langs": by_lang, "files": files}


def _arpa_counts(arpa: Path) -> dict[str, int]:
    """The n-gram counts of an ARPA file's header."""
    counts = {}
    with open(arpa, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("ngram "):
                k, v = line[6:].split("=")
                counts[f"{k}-grams"] = int(v)
            elif line.startswith("\\1-grams:"):
                break
    return counts


def _run(cmd: list[str], log: Path, stdin_files: list[Path] | None = None, stdout: Path | None = None) -> None:
    with open(log, "ab") as lf, open(stdout or os.devnull, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_files else subprocess.DEVNULL, stdout=out, stderr=lf)
        if stdin_files:
            assert proc.stdin is not None
            try:
                for p in stdin_files:
                    with open(p, "rb") as f:
                        shutil.copyfileobj(f, proc.stdin, 1 << 20)
            except BrokenPipeError:
                pass
            finally:
                proc.stdin.close()
        rc = proc.wait()
    if rc != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        raise TrainLmError(f"{Path(cmd[0]).name} exited with {rc}: " + " | ".join(tail))


class TrainLmStage(GlobalStage):
    name = "train-lm"
    version = "1"
    Config = TrainLmConfig

    def run(self, ctx: GlobalContext) -> GlobalResult:
        cfg: TrainLmConfig = self.config  # type: ignore[assignment]
        lmplz = find_tool("lmplz", cfg.lmplz)
        build_binary = find_tool("build_binary", cfg.build_binary)
        work = ctx.work_dir
        models_dir = ctx.out_dir / MODELS_DIR
        work.mkdir(parents=True, exist_ok=True)
        models_dir.mkdir(parents=True, exist_ok=True)

        if cfg.reference_paths:
            tasks = []
            for k, (lang, path) in enumerate(sorted(cfg.reference_paths.items())):
                if not Path(path).is_file():
                    raise ConfigError(f"stage {ctx.stage_name!r}: reference_paths.{lang}: no file {path}")
                tasks.append({"kind": "file", "lang": lang, "path": str(Path(path).resolve()), "name": f"file-{k:05d}",
                              "sha256": sha256_file(path)})
        else:
            tasks = [{"kind": "shard", "path": str(p), "name": p.stem} for p in ctx.input_shards]

        texts = ctx.phases.map("text", ReferenceWorker, (str(work), cfg.model_dump(mode="json")), tasks,
                               desc=f"{ctx.stage_name}: text")
        totals: dict[str, dict[str, int]] = {}
        for res in texts:
            for lang, c in res["langs"].items():
                t = totals.setdefault(lang, {"docs": 0, "lines": 0, "tokens": 0})
                for k in t:
                    t[k] += c[k]

        models: dict[str, dict] = {}
        skipped: dict[str, str] = {}
        for lang in sorted(totals):
            c = totals[lang]
            if c["docs"] < cfg.min_docs:
                skipped[lang] = f"{c['docs']} reference documents < min_docs {cfg.min_docs}"
                continue
            res = ctx.phases.step(f"lmplz-{lang}", lambda lang=lang: self._train(lang, work, models_dir, lmplz, build_binary))
            models[lang] = {**res["model"], **c}
        if not models:
            raise ConfigError(
                f"stage {ctx.stage_name!r}: no language has enough reference text "
                f"({', '.join(f'{k}: {v}' for k, v in skipped.items()) or 'no reference documents found'})"
            )
        index = {"order": cfg.order, "normalization": "filters.kenlm_lm.prepare_lines", "models": models}
        atomic_write_json(models_dir / MODELS_INDEX, index)
        return GlobalResult(
            accounting=(
                "trains KenLM models from reference text and writes no document shards; "
                "later stages read the documents of their own input"
            ),
            outputs=[
                {"path": str(models_dir / m["file"]), "sha256": m["sha256"], "bytes": m["bytes"]}
                for m in models.values()
            ],
            extra={
                "reference": {"source": cfg.reference_source, "paths": dict(cfg.reference_paths)},
                "reference_counts": totals,
                "models": models,
                "skipped_langs": skipped,
            },
        )

    def _train(self, lang: str, work: Path, models_dir: Path, lmplz: str, build_binary: str) -> dict:
        """One language: lmplz on its reference files, then build_binary (a phase step)."""
        cfg: TrainLmConfig = self.config  # type: ignore[assignment]
        files = sorted((work / lang).glob("*.txt"))
        arpa = work / f"{lang}.arpa"
        log = work / f"{lang}.log"
        tmp = work / f"{lang}.sort"
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed or failed lmplz
        tmp.mkdir(parents=True)
        log.unlink(missing_ok=True)
        cmd = [lmplz, "-o", str(cfg.order), "-S", cfg.memory, "-T", str(tmp), "--discount_fallback"]
        if cfg.prune:
            cmd += ["--prune", *map(str, cfg.prune)]
        _run(cmd, log, stdin_files=files, stdout=arpa)
        counts = _arpa_counts(arpa)
        out = models_dir / f"{lang}.bin"
        partial = models_dir / f"{lang}.bin.partial"
        _run([build_binary, "-s", cfg.binary_type, str(arpa), str(partial)], log)
        os.replace(partial, out)
        arpa.unlink()
        shutil.rmtree(tmp, ignore_errors=True)
        info = file_info(out)
        return {
            "model": {"file": out.name, "sha256": info["sha256"], "bytes": info["bytes"], "order": cfg.order,
                      "ngrams": counts},
            "files": [info],
        }


def load_models_index(run_dir: Path, stage_name: str) -> dict[str, str]:
    """Language -> model path of a finished train-lm stage in ``run_dir``."""
    sdir = Path(run_dir) / stage_name
    if not (sdir / "_SUCCESS").exists():
        raise ConfigError(f"models_from: stage {stage_name!r} has not finished in {run_dir} (no _SUCCESS)")
    index_path = sdir / MODELS_DIR / MODELS_INDEX
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"models_from: cannot read {index_path}: {e}") from None
    return {lang: str(sdir / MODELS_DIR / m["file"]) for lang, m in index["models"].items()}


STAGE = TrainLmStage
