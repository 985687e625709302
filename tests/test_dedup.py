"""The dedup stage: global across shards, against a brute-force oracle; layout independence,
resume, runner integration, config errors, and the local vs Ray executors."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.config import build_config
from curate.errors import ConfigError
from curate.executors import LocalExecutor
from curate.manifest import write_manifest, write_success
from curate.shardio import write_parquet
from curate.runner import run_global_stage
from stages.dedup import EXACT, NEAR, DedupConfig, DedupStage, connected_components

WORDS = [f"w{i}" for i in range(2000)]


def _text(rng: random.Random, n: int = 150) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _replace(rng: random.Random, text: str, k: int) -> str:
    w = text.split()
    for i in rng.sample(range(0, len(w), 10), k):  # edits at least 10 words apart
        w[i] = "x" + w[i]
    return " ".join(w)


def make_docs(seed: int = 0) -> list[dict]:
    """Documents with planted exact, normalised-exact, near, chained and dissimilar variants."""
    rng = random.Random(seed)
    docs: list[dict] = []

    def add(i: str, t: str, score: float | None = None) -> None:
        docs.append({"id": i, "text": t, "quality_score": score})

    for k in range(25):
        add(f"s{k:02d}", _text(rng))
    a = _text(rng)
    add("a0", a)
    add("a1", a)  # exact copy
    add("a2", "  " + a.upper().replace(" ", "\t ") + "\n")  # whitespace/case copy
    b = _text(rng)
    add("b0", b)
    add("b1", _replace(rng, b, 1))  # near duplicate
    c = _text(rng)
    add("c0", c)
    add("c1", _replace(rng, c, 12))  # dissimilar variant
    d0 = _text(rng)
    d1 = _replace(rng, d0, 2)
    add("d0", d0)
    add("d1", d1)
    add("d2", _replace(rng, d1, 2))  # chained through d1
    e = _text(rng)
    add("e0", e, 0.1)
    add("e1", _replace(rng, e, 1), 0.9)  # higher score wins over lower id
    add("e2", _replace(rng, e, 1), None)
    f = _text(rng)
    add("f0", f)
    add("f1", f + " " + _text(rng, 10))  # boilerplate appended
    add("g0", "")
    add("g1", "   ")  # empty after normalisation
    add("h0", "Hello world")
    add("h1", "hello   WORLD")
    add("h2", "hello there")
    rng.shuffle(docs)
    return docs


def write_input(docs: list[dict], out: Path, n_shards: int) -> list[Path]:
    paths = []
    for s in range(n_shards):
        part = docs[s * len(docs) // n_shards : (s + 1) * len(docs) // n_shards]
        t = pa.table(
            {
                "id": pa.array([d["id"] for d in part], pa.string()),
                "text": pa.array([d["text"] for d in part], pa.string()),
                "url": pa.array([f"https://x.example/{d['id']}" for d in part], pa.string()),
                "domain": pa.array(["x.example"] * len(part), pa.string()),
                "source": pa.array(["web"] * len(part), pa.string()),
                "quality_score": pa.array([d["quality_score"] for d in part], pa.float64()),
            }
        )
        paths.append(Path(write_parquet(t, out / f"part-{s:05d}.parquet")["path"]))
    return paths


def oracle(docs: list[dict], threshold: float = 0.8) -> dict[str, tuple[str, str]]:
    """Brute force: removed id -> (reason, kept id)."""

    def norm(t):
        return " ".join(t.lower().split())

    def shingles(t):
        w = t.lower().split()
        if not w:
            return set()
        return {" ".join(w[i : i + 5]) for i in range(max(1, len(w) - 4))}

    ids = [d["id"] for d in docs]
    parent = {i: i for i in ids}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    sets = {d["id"]: shingles(d["text"]) for d in docs}
    for i, x in enumerate(docs):
        for y in docs[i + 1 :]:
            sx, sy = sets[x["id"]], sets[y["id"]]
            near = bool(sx and sy) and len(sx & sy) / len(sx | sy) >= threshold
            if near or norm(x["text"]) == norm(y["text"]):
                parent[find(x["id"])] = find(y["id"])
    clusters: dict[str, list[dict]] = {}
    for d in docs:
        clusters.setdefault(find(d["id"]), []).append(d)
    out = {}
    for members in clusters.values():
        keep = sorted(members, key=lambda d: (-(d["quality_score"] if d["quality_score"] is not None else -1e300), d["id"]))[0]
        for d in members:
            if d is not keep:
                reason = EXACT if norm(d["text"]) == norm(keep["text"]) else NEAR
                out[d["id"]] = (reason, keep["id"])
    return out


def run(paths: list[Path], out: Path, executor=None, **cfg) -> dict:
    cfg.setdefault("score_column", "quality_score")  # the test corpus's score column
    stage = DedupStage(DedupConfig(**cfg))
    ex = executor or LocalExecutor(1)
    return run_global_stage(stage, paths, out, ex)


def outputs(out: Path) -> tuple[list[str], dict[str, tuple[str, str]]]:
    kept = []
    for p in sorted(out.glob("part-*.parquet")):
        kept += pq.read_table(p, columns=["id"]).column("id").to_pylist()
    rej = {}
    for p in sorted((out / "rejected").glob("part-*.parquet")):
        t = pq.read_table(p)
        assert set(t.column("stage").to_pylist()) <= {"dedup"}
        for i, r, d in zip(t.column("id").to_pylist(), t.column("reason").to_pylist(), t.column("detail").to_pylist()):
            rej[i] = (r, d)
    return kept, rej


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = make_docs()
    d = tmp_path_factory.mktemp("dedup_in")
    return docs, write_input(docs, d / "in3", 3), write_input(docs, d / "in1", 1), write_input(docs, d / "in5", 5)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    docs, paths, _, _ = corpus
    out = tmp_path_factory.mktemp("dedup_ref") / "dedup"
    body = run(paths, out, partitions=3)
    return out, body


def test_matches_bruteforce_oracle(corpus, reference):
    docs, paths, _, _ = corpus
    out, body = reference
    expected = oracle(docs)
    kept, rejected = outputs(out)
    assert rejected == expected
    assert sorted(kept) == sorted(d["id"] for d in docs if d["id"] not in expected)
    # The planted cases, spelled out.
    assert rejected["a1"] == (EXACT, "a0") and rejected["a2"] == (EXACT, "a0")
    assert rejected["b1"] == (NEAR, "b0")
    assert "c1" not in rejected and "h2" not in rejected
    assert rejected["d2"] == (NEAR, "d0")
    assert rejected["e0"] == (NEAR, "e1") and rejected["e2"] == (NEAR, "e1")
    assert rejected["g1"] == (EXACT, "g0") and rejected["h1"] == (EXACT, "h0")
    assert body["input_rows"] == len(docs) == body["kept_rows"] + body["rejected_rows"]
    assert body["reasons"] == dict(Counter(r for r, _ in expected.values()))
    sizes = Counter(Counter(k for _, k in expected.values()).values())
    assert body["clusters"]["cluster_size_histogram"] == {str(n + 1): c for n, c in sorted(sizes.items())}
    assert body["lsh"]["bands"] * body["lsh"]["rows"] <= 128 and body["lsh"]["p_candidate_at_threshold"] > 0.99
    assert not (out / "_work").exists()


def test_shards_keep_row_order_numbering_and_columns(corpus, reference):
    _, paths, _, _ = corpus
    out, body = reference
    for i, p in enumerate(paths):
        src = pq.read_table(p)
        kept = pq.read_table(out / f"part-{i:05d}.parquet")
        rej = pq.read_table(out / "rejected" / f"part-{i:05d}.parquet")
        assert kept.num_rows + rej.num_rows == src.num_rows
        assert kept.schema.names == src.schema.names
        assert rej.schema.names == src.schema.names + ["stage", "reason", "detail"]
        order = {x: k for k, x in enumerate(src.column("id").to_pylist())}
        ks = [order[x] for x in kept.column("id").to_pylist()]
        assert ks == sorted(ks)
    assert [o["rows"] for o in body["outputs"]] == [m["kept"] for m in body["shards"]]


def test_kept_set_independent_of_partitions_and_shard_layout(corpus, reference, tmp_path):
    _, _, one, five = corpus
    ref_kept, ref_rej = outputs(reference[0])
    for i, (paths, parts) in enumerate([(one, 1), (five, 7), (one, None)]):
        out = tmp_path / f"o{i}"
        run(paths, out, partitions=parts)
        kept, rej = outputs(out)
        assert sorted(kept) == sorted(ref_kept) and rej == ref_rej


def test_empty_shard_and_null_text(corpus, reference, tmp_path):
    docs, paths, _, _ = corpus
    src = pq.read_table(paths[0])
    empty = Path(write_parquet(src.slice(0, 0), tmp_path / "in" / "part-00009.parquet")["path"])
    nulls = src.slice(0, 2).set_column(1, "text", pa.array([None, None], pa.string()))
    nulls = nulls.set_column(0, "id", pa.array(["n0", "n1"], pa.string()))
    null_path = Path(write_parquet(nulls, tmp_path / "in" / "part-00010.parquet")["path"])
    out = tmp_path / "dedup"
    body = run([empty] + paths + [null_path], out)
    kept, rej = outputs(out)
    ref_kept, ref_rej = outputs(reference[0])
    # Null texts are empty texts: exact duplicates of "" (g0, the lowest id of that cluster).
    assert rej == {**ref_rej, "n0": (EXACT, "g0"), "n1": (EXACT, "g0")} and sorted(kept) == sorted(ref_kept)
    assert body["shards"][0] == {"index": 0, "input": {"path": str(empty.resolve()), "rows": 0}, "kept": 0, "rejected": 0}


def test_no_input_shards(tmp_path):
    stage = DedupStage(DedupConfig())
    body = run_global_stage(stage, [], tmp_path / "d", LocalExecutor(1))
    assert body["input_rows"] == body["kept_rows"] == body["rejected_rows"] == 0


def test_lower_score_is_better_and_no_score(corpus, tmp_path):
    _, paths, _, _ = corpus
    run(paths, tmp_path / "lo", higher_score_is_better=False)
    _, rej = outputs(tmp_path / "lo")
    assert rej["e1"] == (NEAR, "e0") and rej["e2"] == (NEAR, "e0")  # missing scores rank last
    run(paths, tmp_path / "none", score_column=None)
    _, rej = outputs(tmp_path / "none")
    assert rej["e1"] == (NEAR, "e0") and rej["e2"] == (NEAR, "e0")  # lowest id


def test_exact_only_and_minhash_only(corpus, tmp_path):
    docs, paths, _, _ = corpus
    run(paths, tmp_path / "x", minhash=False)
    _, rej = outputs(tmp_path / "x")
    assert {r for r, _ in rej.values()} == {EXACT}
    assert set(rej) == {"a1", "a2", "g1", "h1"}
    run(paths, tmp_path / "m", exact=False)
    _, rej = outputs(tmp_path / "m")
    assert {r for r, _ in rej.values()} == {NEAR}
    assert rej["a1"] == (NEAR, "a0") and "g1" not in rej  # empty texts have no shingles
    assert "b1" in rej


class _Crash(Exception):
    pass


class _FlakyExecutor(LocalExecutor):
    """Fails on the n-th task of the named phase, like a killed run."""

    def __init__(self, phase: str, n: int):
        super().__init__(1)
        self.phase, self.n, self.ran = phase, n, []

    def map(self, worker_cls, init_args, tasks, desc=""):
        for k, (i, res) in enumerate(super().map(worker_cls, init_args, tasks, desc)):
            self.ran.append(desc)
            if self.phase in desc and k + 1 >= self.n:
                raise _Crash(desc)
            yield i, res


@pytest.mark.parametrize("phase", ["signatures", "verify", "filter"])
def test_resume_after_a_crash_gives_the_same_bytes(corpus, reference, tmp_path, phase):
    _, paths, _, _ = corpus
    out = tmp_path / "dedup"
    with pytest.raises(_Crash):
        run(paths, out, executor=_FlakyExecutor(phase, 2), partitions=3)
    assert (out / "_work").exists()
    again = _FlakyExecutor("never", 1)
    run(paths, out, executor=again, partitions=3)
    if phase == "signatures":
        # The first shard's result was recorded and is not redone; the second finished its
        # work but its result never reached the driver (the crash), so it is redone.
        assert sum("signatures" in d for d in again.ran) == len(paths) - 1
    ref = reference[0]
    for p in sorted(ref.glob("part-*.parquet")) + sorted((ref / "rejected").glob("part-*.parquet")):
        assert (out / p.relative_to(ref)).read_bytes() == p.read_bytes()


def test_changed_config_clears_stale_work(corpus, tmp_path):
    _, paths, _, _ = corpus
    out = tmp_path / "dedup"
    with pytest.raises(_Crash):
        run(paths, out, executor=_FlakyExecutor("filter", 2), partitions=3)
    run(paths, out, minhash=False)
    _, rej = outputs(out)
    assert set(rej) == {"a1", "a2", "g1", "h1"}


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'treshold'"):
        build_config(DedupConfig, {"treshold": 0.5}, "dedup config")
    for bad in ({"bands": 10}, {"bands": 20, "rows": 7}, {"threshold": 0}, {"exact": False, "minhash": False},
                {"normalization": ["stem"]}, {"partitions": 0}):
        with pytest.raises(ConfigError):
            build_config(DedupConfig, bad, "dedup config")


def test_connected_components():
    a = [1, 2, 10, 11, 20, 4]
    b = [2, 3, 11, 12, 20, 3]
    nodes, labels = connected_components(a, b)
    groups = {}
    for n, lab in zip(nodes.tolist(), labels.tolist()):
        groups.setdefault(lab, set()).add(n)
    assert sorted(map(sorted, groups.values())) == [[1, 2, 3, 4], [10, 11, 12], [20]]


def test_through_the_runner(corpus, tmp_path):
    from curate.runner import run_pipeline

    _, paths, _, _ = corpus
    run_dir = tmp_path / "run"
    up = run_dir / "extract"
    outs = []
    for p in paths:
        t = pq.read_table(p)
        outs.append(write_parquet(t, up / p.name))
    write_manifest(up, {"stage": "extract", "outputs": outs})
    write_success(up, "x", "y")
    pipeline = {
        "pipeline": "t",
        "executor": "local",
        "workers": 1,
        "stages": {
            "extract": {"input": {"paths": ["unused"]}},
            "dedup": {"input": "extract", "config": {"partitions": 2}},
        },
    }
    res = run_pipeline(pipeline, run_dir, stages=["dedup"], log=lambda *a: None)
    m = res["dedup"]
    assert m["conservation"]["ok"] and m["clusters"]["clusters"] > 0
    assert json.loads((run_dir / "dedup" / "_manifest.json").read_text())["reasons"] == m["reasons"]
    assert (run_dir / "dedup" / "_SUCCESS").exists()
    res2 = run_pipeline(pipeline, run_dir, stages=["dedup"], log=lambda *a: None)
    assert res2["dedup"]["finished_at"] == m["finished_at"]  # skipped, not redone


@pytest.mark.ray
def test_ray_executor_same_kept_set(corpus, reference, tmp_path):
    pytest.importorskip("ray")
    from curate.executors import get_executor

    _, paths, _, _ = corpus
    ref_kept, ref_rej = outputs(reference[0])
    for w in (1, 2):
        out = tmp_path / f"ray{w}"
        run(paths, out, executor=get_executor("ray", w), partitions=3)
        kept, rej = outputs(out)
        assert sorted(kept) == sorted(ref_kept) and rej == ref_rej
        assert (out / "part-00000.parquet").read_bytes() == (reference[0] / "part-00000.parquet").read_bytes()


def test_work_file_reads_equal_filtered_reads(tmp_path):
    """The row-group reads of work files give what ``pq.read_table(filters=...)`` gives."""
    import numpy as np

    from stages.dedup import _read_filtered, _read_group, _read_refs, _ref, _write_work

    rng = np.random.default_rng(0)
    n, P = 3000, 5
    part = rng.integers(0, P, n).astype(np.uint32)
    t = pa.table({"part": pa.array(part), "key": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64))})
    _write_work(tmp_path / "b.parquet", t, part, P + 2)  # groups 5 and 6 are empty
    for g in range(P + 2):
        want = pq.read_table(tmp_path / "b.parquet", columns=["key"], filters=[("part", "=", pa.scalar(g, pa.uint32()))])
        assert _read_group(tmp_path / "b.parquet", g, ["key"]).equals(want)
    refs = _ref(3, np.arange(n))
    sets = pa.table({"ref": pa.array(refs), "id": pa.array([f"d{i}" for i in range(n)])})
    _write_work(tmp_path / "s.parquet", sets, row_group_size=256)
    for want in (refs[[0, 5, 255, 256, 1000, 2999]], refs[:0], refs[rng.choice(n, 400, replace=False)]):
        want = np.sort(want)
        got = _read_refs(tmp_path / "s.parquet", want, ["ref", "id"])
        ref = pq.read_table(tmp_path / "s.parquet", columns=["ref", "id"], filters=[("ref", "in", pa.array(want, pa.uint64()))])
        assert got.equals(ref)
    beyond = _read_refs(tmp_path / "s.parquet", np.append(refs[:2], _ref(3, np.array([n + 5]))), ["ref"])
    assert beyond.column("ref").to_pylist() == refs[:2].tolist()  # a missing row is left out, not invented
    for lo, hi in ((3 << 32, 4 << 32), (_ref(3, np.array([700]))[0], _ref(3, np.array([1900]))[0]), (0, 3 << 32)):
        ref = pq.read_table(tmp_path / "s.parquet", filters=[("ref", ">=", pa.scalar(int(lo), pa.uint64())),
                                                              ("ref", "<", pa.scalar(int(hi), pa.uint64()))])
        assert _read_filtered(tmp_path / "s.parquet", int(lo), int(hi)).equals(ref)
