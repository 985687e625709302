"""Integrity under bad input (issue 15): nothing silently lost, duplicated, damaged or trusted.

Each test is one case of the issue; each failed on the code before the fix.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from curate.config import build_config, load_pipeline
from curate.errors import ConfigError, CurateError
from stages.extract import Extract, ExtractConfig
from tests.warcfixtures import PARAS_EN, article

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _stage(**cfg) -> Extract:
    st = Extract(build_config(ExtractConfig, cfg, "test"))
    st.setup()
    return st


def _record(uri: str, html: bytes, ctype: str = "text/html; charset=utf-8", length_delta: int = 0) -> bytes:
    """One plain WARC response record, written by hand; ``length_delta`` makes its
    Content-Length lie by that many bytes."""
    http = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + html
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {uri}\r\n"
            f"WARC-Date: 2026-01-01T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:{abs(hash(uri)) % 10**12:012d}>\r\n"
            f"Content-Type: application/http; msgtype=response\r\n"
            f"Content-Length: {len(http) + length_delta}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def _outcomes(res) -> dict[str, str | None]:
    out = {r["url"]: None for r in res.kept.to_pylist()}
    out.update({r["url"]: r["reason"] for r in res.rejected.to_pylist()})
    return out


# -- 1: a lying Content-Length ---------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("delta", [9000, -30], ids=["too_large", "too_small"])
def test_lying_content_length_is_one_corrupt_record_and_the_rest_is_read(tmp_path, gz, delta):
    pages = [article(f"Page {n}", PARAS_EN).encode() for n in range(4)]
    recs = [_record(f"https://a.example.org/{n}", p, length_delta=delta if n == 1 else 0) for n, p in enumerate(pages)]
    path = tmp_path / ("x.warc.gz" if gz else "x.warc")
    path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in recs) if gz else b"".join(recs))
    res = _stage().process_source(str(path))
    out = _outcomes(res)
    # four records in the file: four rows, the lying one rejected (never kept truncated)
    assert res.n_input == 4 == res.kept.num_rows + res.rejected.num_rows
    assert out == {"https://a.example.org/0": None, "https://a.example.org/1": "extract.corrupt_record",
                   "https://a.example.org/2": None, "https://a.example.org/3": None}
    detail = res.rejected.column("detail").to_pylist()[0]
    assert "Content-Length" in detail


# -- 2: symlinks in an HTML folder -----------------------------------------------------------

def test_symlinks_in_an_html_folder_do_not_ingest_a_page_twice(tmp_path):
    root = tmp_path / "pages"
    (root / "sub").mkdir(parents=True)
    (root / "a.html").write_text(article("Alpha", PARAS_EN))
    (root / "sub" / "b.html").write_text(article("Beta", PARAS_EN[::-1]))
    (root / "loop").symlink_to(".")
    (root / "sub" / "up").symlink_to("..")
    (root / "alias.html").symlink_to("a.html")
    st = _stage()
    inputs = st.list_inputs([str(root)])
    assert inputs == [str(root), str(root / "sub")]
    results = [st.process_source(i) for i in inputs]
    titles = Counter(t for r in results for t in r.kept.column("title").to_pylist())
    assert titles == {"Alpha": 1, "Beta": 1}
    stats = Counter()
    for r in results:
        stats.update({k: v for k, v in r.stats.items() if k.startswith("skipped.")})
    assert stats == {"skipped.symlinked_files": 1, "skipped.looping_dir_links": 2}


# -- 3: charsets -----------------------------------------------------------------------------

CAFE = ["Un café crème et un thé, à la française.", "Déjà vu : la fenêtre donne sur le jardin où poussent des pêches."]


def test_cp1252_labelled_utf8_and_undeclared_latin1_decode_without_replacement(tmp_path):
    body = article("Café", PARAS_EN * 3 + CAFE, lang="fr", charset="utf-8")
    warc = tmp_path / "m.warc"
    warc.write_bytes(_record("https://fr.example.org/cafe", body.encode("cp1252")))
    folder = tmp_path / "html"
    folder.mkdir()
    undeclared = body.replace("<meta charset='utf-8'>", "")
    (folder / "latin1.html").write_bytes(undeclared.encode("latin-1"))
    st = _stage()
    for res in (st.process_source(str(warc)), st.process_source(str(folder))):
        (row,) = res.kept.to_pylist()
        assert "\ufffd" not in row["text"]
        assert "café crème" in row["text"] and "Déjà vu" in row["text"]
        assert row["charset"] == "cp1252"


def test_invalid_utf8_is_a_decode_error_not_a_parse_error(tmp_path):
    bodies = [b"\xc3\x28 caf\xff\xfe", b"<p>\xff\xfe\xfd\xfc \x81\x8d</p>", bytes(range(0x80, 0x100)) + b"<p>x</p>",
              b"<p>" + b"\xe9\xff\x80 " * 40 + b"</p>"]
    path = tmp_path / "bad.warc"
    path.write_bytes(b"".join(_record(f"https://x.example.org/{i}", b) for i, b in enumerate(bodies)))
    res = _stage().process_source(str(path))
    assert res.n_input == len(bodies)
    reasons = res.rejected.column("reason").to_pylist()
    assert "extract.parse_error" not in reasons
    assert reasons == ["extract.decode_error"] * len(bodies)


# -- 6: an unreadable input --------------------------------------------------------------------

def _as_unprivileged(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` as an unprivileged user (so file permissions apply even when the tests run as root)."""
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file permissions cannot be tested")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": str(cwd), "CURATE_NO_PROGRESS": "1"})


def test_an_unreadable_file_is_one_rejected_input_and_the_rest_is_processed():
    base = Path(tempfile.mkdtemp(prefix="curate-unreadable-"))
    try:
        os.chmod(base, 0o777)
        data = base / "in"
        (data / "html").mkdir(parents=True)
        (data / "good.warc").write_bytes(_record("https://a.example.org/ok", article("Ok", PARAS_EN).encode()))
        (data / "locked.warc").write_bytes(_record("https://a.example.org/locked", article("Locked", PARAS_EN).encode()))
        (data / "html" / "a.html").write_text(article("Readable", PARAS_EN))
        (data / "html" / "b.html").write_text(article("Locked page", PARAS_EN))
        os.chmod(data / "locked.warc", 0)
        os.chmod(data / "html" / "b.html", 0)
        spec = {"pipeline": "t", "executor": "local", "workers": 1,
                "stages": {"extract": {"input": {"paths": [str(data)]}}}}
        script = ("import json, sys; from curate.runner import run_pipeline; "
                  f"m = run_pipeline(json.loads(sys.argv[1]), {str(base / 'run')!r}, log=lambda *_: None)['extract']; "
                  "print(json.dumps({k: m[k] for k in ('input_rows', 'kept_rows', 'rejected_rows', 'reasons')}))")
        os.chmod(base, 0o777)
        for d in (data, data / "html"):
            os.chmod(d, 0o755)
        r = _as_unprivileged([PY, "-c", script, json.dumps(spec)], ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        m = json.loads(r.stdout.strip().splitlines()[-1])
        assert m["kept_rows"] == 2 and m["rejected_rows"] == 2
        assert m["reasons"] == {"extract.unreadable_input": 2}
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- 7: config strictness --------------------------------------------------------------------

def test_a_duplicated_yaml_key_is_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("pipeline: p\nstages:\n  extract:\n    input: {paths: [x]}\n"
                    "    config: {min_text_chars: 5}\n    config: {min_text_chars: 50}\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r".*duplicate key 'config'"):
        load_pipeline(path)


def test_a_boolean_for_a_number_is_an_error_naming_the_key():
    from stages.langid import LangIdConfig

    with pytest.raises(ConfigError, match=r"in demo\.yaml: min_score: .*boolean"):
        build_config(LangIdConfig, {"min_score": True}, "stage 'langid' in demo.yaml")
    with pytest.raises(ConfigError, match=r"min_text_chars: .*boolean"):
        build_config(ExtractConfig, {"min_text_chars": False}, "stage 'extract' in demo.yaml")
    assert build_config(LangIdConfig, {"min_score": 1}, "x").min_score == 1.0
    assert build_config(ExtractConfig, {"favor_precision": True}, "x").favor_precision is True


# -- 8: disk errors ----------------------------------------------------------------------------

def test_disk_full_names_the_output_not_its_temp_file(tmp_path):
    from curate.shardio import atomic_write_json, write_parquet

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "extract" / "part-00000.parquet"
    out.parent.mkdir()
    # the temp file the writer opens is /dev/full: every write fails with a real ENOSPC
    (out.parent / f"{out.name}.{os.getpid()}.tmp").symlink_to("/dev/full")
    with pytest.raises(CurateError) as ei:
        write_parquet(pa.table({"x": list(range(200_000))}), out)
    msg = str(ei.value)
    assert f"cannot write {out}: No space left on device" in msg and ".tmp" not in msg
    assert "free space" in msg and ei.value.errno == errno.ENOSPC
    assert list(out.parent.iterdir()) == []  # the partial temp file is gone
    man = tmp_path / "_manifest.json"
    (tmp_path / f"{man.name}.{os.getpid()}.tmp").symlink_to("/dev/full")
    with pytest.raises(CurateError, match=re.escape(f"cannot write {man}: No space left on device")):
        atomic_write_json(man, {"x": "y" * 100_000})


_RO_SCRIPT = r"""
set -e
mount -t tmpfs -o size=16m tmpfs "$MNT"
cp -r "$RUN" "$MNT/run"
mount -o remount,ro "$MNT"
echo "== inspect"; "$PY" -m curate.cli inspect "$MNT/run"
echo "== sql"; "$PY" -m curate.cli sql "SELECT count(*) AS n FROM extract" --run "$MNT/run" --format json
echo "== write"; "$PY" -c "import sys, pyarrow as pa; from curate.shardio import write_parquet
from curate.errors import CurateError
try:
    write_parquet(pa.table({'x': [1]}), sys.argv[1])
except CurateError as e:
    print('error:', e)" "$MNT/run/extract/part-00009.parquet"
"""


def test_read_only_run_directory_inspect_and_sql_work_and_writes_say_what_to_do(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a read-only file system")
    run = tmp_path / "run"
    _small_run(tmp_path, run)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", _RO_SCRIPT],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MNT": str(mnt), "RUN": str(run), "PY": PY, "CURATE_NO_PROGRESS": "1"})
    err = r.stderr.lower()
    if r.returncode and ("unshare failed" in err or "not permitted" in err or ("mount:" in err and "denied" in err)):
        pytest.skip("mounting a file system is not permitted here")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "Traceback" not in out + r.stderr
    inspect_part = out.split("== sql")[0]
    assert "extract" in inspect_part and "2" in inspect_part
    assert json.loads(out.split("== sql")[1].split("== write")[0].strip()) == {"n": 2}
    line = out.split("== write")[1].strip()
    assert line.startswith(f"error: cannot write {mnt}/run/extract/part-00009.parquet: Read-only file system")
    assert "use a writable --run directory" in line


# -- 9: curate sql is read-only --------------------------------------------------------------

def _small_run(tmp_path: Path, run: Path) -> None:
    from curate.runner import run_pipeline

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "a.warc").write_bytes(_record("https://a.example.org/1", article("One", PARAS_EN).encode())
                                  + _record("https://a.example.org/2", article("Two", PARAS_EN[::-1]).encode())
                                  + _record("https://a.example.org/3", b"", "text/html"))
    spec = {"pipeline": "t", "executor": "local", "workers": 1, "stages": {"extract": {"input": {"paths": [str(data)]}}}}
    run_pipeline(spec, run, log=lambda *_: None)


def test_sql_is_read_only_unless_a_directory_outside_the_run_is_allowed(tmp_path):
    from curate.sql import query

    run = tmp_path / "run"
    _small_run(tmp_path, run)
    shard = run / "extract" / "part-00000.parquet"
    before = shard.read_bytes()
    with pytest.raises(CurateError, match="Permission"):
        query(run, f"COPY (SELECT * FROM extract LIMIT 1) TO '{shard}' (FORMAT parquet)")
    with pytest.raises(CurateError, match="Permission"):
        query(run, f"COPY (SELECT 1 AS x) TO '{run / '_pipeline.json'}'")
    with pytest.raises(CurateError, match="Permission"):
        query(run, f"SELECT count(*) FROM read_parquet('{shard}')")
    with pytest.raises(CurateError, match="configuration has been locked"):
        query(run, "SET enable_external_access = true; COPY (SELECT 1 AS x) TO '/tmp/x.csv'")
    assert shard.read_bytes() == before
    export = tmp_path / "exports"
    export.mkdir()
    query(run, f"COPY (SELECT url FROM extract ORDER BY url) TO '{export / 'urls.csv'}'", allow_write=export)
    assert (export / "urls.csv").read_text().split() == ["url", "https://a.example.org/1", "https://a.example.org/2"]
    with pytest.raises(CurateError, match="outside the run"):
        query(run, "SELECT 1", allow_write=run / "extract")


def test_sql_views_of_odd_stage_names_and_a_broken_pipeline_file(tmp_path):
    from curate.sql import query

    run = tmp_path / "run"
    _small_run(tmp_path, run)
    shutil.copytree(run / "extract", run / "my stage")
    (run / "_pipeline.json").write_text("not json")
    assert query(run, 'SELECT count(*) FROM "my stage"')[1] == [(2,)]
    assert query(run, "SELECT count(*) FROM extract_rejected")[1] == [(1,)]
