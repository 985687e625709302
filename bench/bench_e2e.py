"""End to end against DataTrove and NeMo Curator, side by side in one job (make bench-e2e).

Builds the corpora under a scratch folder with ``../shared/corpora/make_warc.py`` (1x: the first
``--docs`` pages of ``../shared/corpora/debian-docs`` in their original order; 4x: the same pages
plus three perturbed mirror copies, i.e. near-duplicates), sets up the peers' environments with
``../shared/bench/setup_peers.sh`` (idempotent), then runs, alternating, ``--rounds`` rounds of

* curate: ``curate run manifests/bench_e2e.yaml`` (extract -> langid -> quality -> dedup, Ray),
* DataTrove: ``datatrove_bench.py --parts extract,minhash`` (the same four steps),
* NeMo Curator: ``nemo_bench.py`` (extract -> LID -> heuristic filters; its fuzzy dedup needs a GPU),

rotating which system starts each round. Every run is one subprocess; this process is made the
child subreaper, so daemons a run starts (Ray's) stay in its process tree: peak RSS is the tree's
sum sampled every 0.25 s with psutil, CPU seconds come from ``getrusage`` of the reaped tree.
Scaling runs (curate, 1 vs 2 workers; 1x vs 4x) and the extraction F1 of the settings used
follow. Results go to ``SCRATCH/results.json``; ``bench/e2e_report.py`` writes the section of
docs/BENCHMARKS.md between its marker comments from them.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpora" / "debian-docs"
PEER_BENCH = SHARED / "bench"
EVAL = SHARED / "eval" / "extraction"
SYSTEMS = ("curate", "datatrove", "nemo")
PR_SET_CHILD_SUBREAPER = 36


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- corpora ----------------------------------------------------------------------
def original_docs(n_docs: int) -> tuple[list[tuple[str, str, bytes]], list[str]]:
    """``n_docs`` pages of debian-docs, every k-th of them in make_warc.py's order (so that every
    package is in a smaller corpus), as its ``load_corpus`` returns them: ``(package, path, html)``.
    make_warc.py deals record ``n`` to shard ``n % 8``, so reading the shards round-robin gives
    the original order back."""
    sys.path.insert(0, str(ROOT))
    from curate.warc import iter_warc

    def pages(f: Path):
        for it in iter_warc(str(f)):
            if it.rec_type == "response":
                yield it

    iters = [pages(f) for f in sorted(CORPUS.glob("part-*.warc.gz"))]
    docs, packages = [], []
    while iters:
        for it in list(iters):
            item = next(it, None)
            if item is None:
                iters.remove(it)
                continue
            pkg, _, rel = item.uri.removeprefix("https://docs.example/").partition("/")
            docs.append((pkg, rel, item.body))
            if pkg not in packages:
                packages.append(pkg)
    docs = docs[:: max(1, len(docs) // n_docs)][:n_docs]
    packages = [p for p in packages if any(d[0] == p for d in docs)]
    return docs, packages


def build_corpora(scratch: Path, n_docs: int, scales: list[int], shards: int) -> dict[int, Path]:
    """``SCRATCH/corpus/<k>x-<docs>`` for each scale k, made by make_warc.py (kept when its
    stamp matches). make_warc.py reads installed Debian packages; here its ``load_corpus`` is
    handed the pages of the shared 1x corpus instead, everything else is the script's own."""
    spec = importlib.util.spec_from_file_location("make_warc", SHARED / "corpora" / "make_warc.py")
    out: dict[int, Path] = {}
    docs = packages = None
    for k in scales:
        d = scratch / "corpus" / f"{k}x-{n_docs}"
        stamp = {"docs": n_docs, "sample": "every k-th", "replicas": k, "shards": shards, "source": (CORPUS / "MANIFEST.txt").read_text()}
        out[k] = d
        if (d / "stamp.json").exists() and json.loads((d / "stamp.json").read_text()) == stamp:
            continue
        if docs is None:
            docs, packages = original_docs(n_docs)
        log(f"building {d} ({len(docs)} pages x {k})")
        mw = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mw)
        mw.load_corpus = lambda _pkgs: docs
        argv = sys.argv
        sys.argv = ["make_warc.py", "--out", str(d), "--replicas", str(k), "--shards", str(shards),
                    "--packages", *packages]
        try:
            mw.main()
        finally:
            sys.argv = argv
        (d / "stamp.json").write_text(json.dumps(stamp))
    return out


def corpus_manifest(d: Path) -> dict:
    m = {}
    for line in (d / "MANIFEST.txt").read_text().splitlines():
        k, _, v = line.partition(" ")
        if k in ("records", "html_bytes", "warc_gz_bytes"):
            m[k] = int(v)
    return m


# -- measuring one run -----------------------------------------------------------------
class TreeSampler:
    """Peak summed RSS of this process's descendants (sampled) while a run is going."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak_rss, self.n_procs = interval, 0, 0
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, start) -> last seen user+system s
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss, n = 0, 0
            for p in me.children(recursive=True):
                try:
                    rss += p.memory_info().rss
                    n += 1
                    ct = p.cpu_times()
                    self.cpu[(p.pid, p.create_time())] = ct.user + ct.system
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            if rss > self.peak_rss:
                self.peak_rss, self.n_procs = rss, n
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def reap_tree(grace: float = 5.0) -> list[str]:
    """Wait for what is left of a run's tree (orphans reparented to us); kill stragglers after
    ``grace`` seconds. Returns the names of processes that had to be killed."""
    deadline = time.time() + grace
    killed = []
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return killed
        alive = [p for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE]
        if not alive and not psutil.Process().children():
            return killed
        if time.time() > deadline:
            for p in alive:
                try:
                    killed.append(p.name())
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            deadline = time.time() + grace
        time.sleep(0.2)


def measure(cmd: list[str], env: dict, log_path: Path) -> dict:
    """Run ``cmd``; wall time, CPU seconds and peak RSS of its whole process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log_path.open("w") as logf, TreeSampler() as mem:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        rc = proc.wait()
        wall = time.perf_counter() - t0
        killed = reap_tree()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sampled_cpu = sum(mem.cpu.values())
    # getrusage misses processes whose parent died before waiting for them; sampling misses
    # the last < 0.25 s of each process: the larger of the two is the closer figure
    cpu = max(reaped_cpu, sampled_cpu)
    result = None
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return {"rc": rc, "wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "cpu_reaped_s": round(reaped_cpu, 1),
            "cpu_sampled_s": round(sampled_cpu, 1),
            "peak_tree_rss_mb": round(mem.peak_rss / 2**20, 1), "procs_at_peak": mem.n_procs,
            "killed_after": killed, "peer_result": result, "log": str(log_path)}


# -- the systems -------------------------------------------------------------------------
def curate_cmd(args, corpus: Path, work: Path, workers: int) -> tuple[list[str], dict]:
    spec = yaml.safe_load((ROOT / args.pipeline).read_text())
    spec["stages"]["extract"]["input"] = {"paths": [str(corpus)]}
    pipe = work / "pipeline.yaml"
    pipe.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    env = {**os.environ, "CURATE_NO_PROGRESS": "1"}
    return [str(ROOT / ".venv" / "bin" / "curate"), "run", str(pipe), "--run", str(run),
            "--workers", str(workers)], env


def peer_cmd(system: str, args, corpus: Path, work: Path, workers: int) -> tuple[list[str], dict]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if system == "datatrove":
        py = args.peers / "dt" / "bin" / "python"
        return [str(py), str(PEER_BENCH / "datatrove_bench.py"), "--warc", str(corpus), "--work", str(work),
                "--parts", "extract,minhash", "--workers", str(workers), "--tasks", str(workers)], dict(os.environ)
    venv_bin = args.peers / "nemo" / "bin"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}"}
    # Ray's socket paths live under the work dir and may not exceed 107 bytes: a short one in /tmp
    short = Path(tempfile.mkdtemp(prefix="nemo", dir="/tmp"))
    (work / "nemo").symlink_to(short)
    return [str(venv_bin / "python"), str(PEER_BENCH / "nemo_bench.py"), "--warc", str(corpus),
            "--work", str(short / "w"), "--cpus", str(workers)], env


def curate_outcome(work: Path) -> dict:
    """Counts, reasons and stage timings from a curate run's manifests; languages kept."""
    import pyarrow.parquet as pq

    run = work / "run"
    out = {"stages": {}}
    for st in ("extract", "langid", "quality", "dedup"):
        m = json.loads((run / st / "_manifest.json").read_text())
        out["stages"][st] = {"input": m["input_rows"], "kept": m["kept_rows"], "reasons": m["reasons"],
                             "seconds": m["timings"]["seconds"]}
    langs: dict[str, int] = {}
    for f in sorted((run / "dedup").glob("part-*.parquet")):
        for lang in pq.read_table(f, columns=["lang"]).column("lang").to_pylist():
            langs[lang] = langs.get(lang, 0) + 1
    out["kept_langs"] = langs
    out["filtered_docs"] = out["stages"]["quality"]["kept"]
    out["deduped_docs"] = out["stages"]["dedup"]["kept"]
    return out


def peer_langs(folder: Path) -> dict[str, int]:
    """Languages of a peer's kept documents (DataTrove: metadata.language; NeMo: the lid column)."""
    import pyarrow.parquet as pq

    langs: dict[str, int] = {}
    for f in sorted(folder.rglob("*.parquet")):
        t = pq.read_table(f)
        if "metadata" in t.column_names:
            vals = [(m or {}).get("language") for m in t.column("metadata").to_pylist()]
        elif "language" in t.column_names:
            vals = t.column("language").to_pylist()
        elif "lid" in t.column_names:
            vals = [v[1] if isinstance(v, (list, tuple)) and len(v) > 1 else str(v) for v in t.column("lid").to_pylist()]
        else:
            return {}
        for v in vals:
            v = str(v).removeprefix("__label__")
            langs[v] = langs.get(v, 0) + 1
    return langs


def run_one(system: str, args, corpus: Path, workers: int, tag: str) -> dict:
    work = args.scratch / "work" / f"{system}-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    if system == "curate":
        cmd, env = curate_cmd(args, corpus, work, workers)
    else:
        cmd, env = peer_cmd(system, args, corpus, work, workers)
    log(f"{tag} {system}: {' '.join(shlex.quote(c) for c in cmd[:2])} ... ({workers} workers)")
    load = os.getloadavg()[0]
    r = measure(cmd, env, args.scratch / "logs" / f"{system}-{tag}.log")
    r.update(system=system, tag=tag, workers=workers, corpus=corpus.name, load_before=round(load, 2))
    if r["rc"] != 0:
        log(f"  FAILED rc={r['rc']}: see {r['log']}")
        return r
    try:
        if system == "curate":
            r.update(curate_outcome(work))
        else:
            pr = r["peer_result"] or {}
            r["filtered_docs"] = pr.get("filtered_docs")
            r["deduped_docs"] = pr.get("deduped_docs")
            folder = work / ("minhash/deduped" if system == "datatrove" else "nemo/w/filtered")
            r["kept_langs"] = peer_langs(folder)
    except (OSError, KeyError, ValueError) as e:
        r["outcome_error"] = f"{type(e).__name__}: {e}"
    if system == "nemo":
        shutil.rmtree((work / "nemo").resolve(), ignore_errors=True)
    log(f"  {r['wall_s']} s wall, {r['cpu_s']} CPU-s, peak tree RSS {r['peak_tree_rss_mb']} MB, "
        f"kept {r.get('filtered_docs')} / after dedup {r.get('deduped_docs')}")
    return r


# -- extraction F1 ------------------------------------------------------------------------
def extraction_f1(args) -> dict:
    """F1 of the extract stage's settings (eval_extract.py) and of DataTrove's own extractor."""
    if not (EVAL / "pages.warc.gz").exists():
        return {}
    out = {}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "eval_extract.py"), "--settings", args.f1_settings],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "CURATE_NO_PROGRESS": "1"})
    for line in proc.stdout.splitlines():
        if line.startswith('{"eval"'):
            out.update({f"curate {k}": v for k, v in json.loads(line)["results"].items()})
    dt_py = args.peers / "dt" / "bin" / "python"
    if dt_py.exists():
        proc = subprocess.run([str(dt_py), str(ROOT / "bench" / "e2e_peer_f1.py"), str(EVAL),
                               str(args.scratch / "f1")], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                out["datatrove Trafilatura(favour_precision)"] = json.loads(line[len("RESULT "):])
        if proc.returncode:
            out["datatrove_error"] = proc.stderr.strip().splitlines()[-1:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scratch", type=Path, default=ROOT / "build" / "bench-e2e")
    ap.add_argument("--peers", type=Path, help="peer virtualenvs (default SCRATCH/peers)")
    ap.add_argument("--pipeline", default="manifests/bench_e2e.yaml")
    ap.add_argument("--docs", type=int, default=7001, help="pages of debian-docs in the 1x corpus")
    ap.add_argument("--shards", type=int, default=8, help="WARC files per corpus")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds of every system")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=int, default=4, help="the larger corpus (x the 1x pages); 0: none")
    ap.add_argument("--scale-systems", default=",".join(SYSTEMS), help="systems also run on the larger corpus")
    ap.add_argument("--scaling-rounds", type=int, default=1, help="runs of each scaling row")
    ap.add_argument("--f1-settings", default="balanced,fast,precision")
    ap.add_argument("--no-setup", action="store_true", help="do not run setup_peers.sh")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "BENCHMARKS.md"), help="'' to not write it")
    args = ap.parse_args()
    if not CORPUS.exists():
        print("SKIP: ../shared/corpora/debian-docs is absent")
        return 0
    args.scratch = args.scratch.resolve()
    args.peers = (args.peers or args.scratch / "peers").resolve()
    (args.scratch / "logs").mkdir(parents=True, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    systems = args.systems.split(",")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()

    corpora = build_corpora(args.scratch, args.docs, [1] + ([args.scale] if args.scale > 1 else []), args.shards)
    if not args.no_setup and set(systems) - {"curate"}:
        log("setting up the peers (setup_peers.sh, idempotent)")
        subprocess.run(["bash", str(PEER_BENCH / "setup_peers.sh"), str(args.peers), "--nemo"], check=True)

    runs = []
    t_start = time.perf_counter()
    for r in range(args.rounds):
        order = systems[r % len(systems):] + systems[: r % len(systems)]
        for system in order:
            runs.append({**run_one(system, args, corpora[1], args.workers, f"1x-r{r}"), "round": r, "row": "main"})
    for r in range(args.scaling_rounds):
        if "curate" in systems and args.workers > 1:
            runs.append({**run_one("curate", args, corpora[1], 1, f"1x-1w-r{r}"), "round": r, "row": "1 worker"})
        if args.scale > 1:
            for system in args.scale_systems.split(","):
                runs.append({**run_one(system, args, corpora[args.scale], args.workers, f"{args.scale}x-r{r}"),
                             "round": r, "row": f"{args.scale}x"})
    bench_s = time.perf_counter() - t_start
    log("extraction F1 on ../shared/eval/extraction")
    f1 = extraction_f1(args)
    results = {
        "started": started, "bench_s": round(bench_s, 1), "cpus": os.cpu_count(),
        "load_start": [round(x, 2) for x in load_start], "load_end": [round(x, 2) for x in os.getloadavg()],
        "command": "python bench/bench_e2e.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "corpora": {f"{k}x": {"path": str(p), **corpus_manifest(p)} for k, p in corpora.items()},
        "runs": runs, "extraction_f1": f1,
        "curate_extract_config": yaml.safe_load((ROOT / args.pipeline).read_text())["stages"]["extract"].get("config", {}),
    }
    (args.scratch / "results.json").write_text(json.dumps(results, indent=1))
    log(f"results: {args.scratch / 'results.json'}")
    sys.path.insert(0, str(ROOT / "bench"))
    import e2e_report

    text = e2e_report.render(results)
    print(text)
    if args.doc:
        e2e_report.write_section(Path(args.doc), text)
        log(f"wrote the end-to-end section of {args.doc}")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
