from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.config import build_config
from curate.errors import ConfigError
from stages.extract import Extract, ExtractConfig, decode_html, doc_id
from tests.warcfixtures import EXPECTED, PARAS_EN, article, write_warc


def _stage(**cfg):
    st = Extract(build_config(ExtractConfig, cfg, "test"))
    st.setup()
    return st


def _outcomes(res):
    kept = res.kept.to_pylist()
    rej = res.rejected.to_pylist()
    rows = sorted([(r["input_offset"], r["url"], None) for r in kept]
                  + [(r["input_offset"], r["url"], r["reason"]) for r in rej])
    return {url: reason for _, url, reason in rows}, kept, rej


@pytest.mark.parametrize("gz", [True, False])
def test_planted_records_get_their_reasons(tmp_path, gz):
    path = tmp_path / ("x.warc.gz" if gz else "x.warc")
    write_warc(path, gz=gz)
    res = _stage().process_source(str(path))
    outcomes, kept, rej = _outcomes(res)
    urls = [u for u in outcomes]
    assert res.n_input == len(EXPECTED) == len(kept) + len(rej)
    assert [outcomes[u] for u in urls] == EXPECTED
    en = next(r for r in kept if r["url"].endswith("/en"))
    assert "barley and wheat" in en["text"] and "Copyright" not in en["text"] and "Home" not in en["text"]
    assert en["title"] == "River valley" and en["domain"] == "a.example.org" and en["html_lang"] == "en"
    zh = next(r for r in kept if r["url"].endswith("/zh"))
    assert "地铁线路" in zh["text"] and zh["charset"] == "gbk"


def test_corrupt_gzip_member_is_a_row_and_reading_resumes(tmp_path):
    path = tmp_path / "c.warc.gz"
    write_warc(path, gz=True, corrupt_after=0)
    res = _stage().process_source(str(path))
    outcomes, kept, rej = _outcomes(res)
    corrupt = [r for r in rej if r["reason"] == "extract.corrupt_record"]
    assert len(corrupt) == 1 and "gzip" in corrupt[0]["detail"]
    # every planted record after the damage is still read
    assert res.n_input == len(EXPECTED) + 1
    assert outcomes["https://b.example.cn/zh"] is None


def test_truncated_file_end(tmp_path):
    path = tmp_path / "t.warc.gz"
    write_warc(path, gz=True)
    data = path.read_bytes()
    path.write_bytes(data[:-25])
    res = _stage().process_source(str(path))
    _, kept, rej = _outcomes(res)
    assert len(kept) == 2
    assert rej[-1]["reason"] == "extract.corrupt_record" and "truncated" in rej[-1]["detail"]


def test_not_a_warc_at_all(tmp_path):
    path = tmp_path / "junk.warc"
    path.write_bytes(b"this is not a warc file\n" * 10)
    res = _stage().process_source(str(path))
    assert res.kept.num_rows == 0 and res.rejected.num_rows == 1
    assert res.rejected.column("reason").to_pylist() == ["extract.corrupt_record"]


def test_html_folder_and_source_mapping(tmp_path):
    d = tmp_path / "pages"
    d.mkdir()
    (d / "a.html").write_text(article("Valley", PARAS_EN))
    (d / "b.html").write_bytes(article("Latin", PARAS_EN, charset="windows-1252").replace("river", "rivière").encode("cp1252"))
    (d / "c.html").write_bytes(b"")
    st = _stage(source_by_domain={"example.org": "wiki"})
    assert st.list_inputs([str(tmp_path)]) == [str(d)]
    res = st.process_source(str(d))
    outcomes, kept, rej = _outcomes(res)
    assert len(kept) == 2 and [r["reason"] for r in rej] == ["extract.empty"]
    assert any("rivière" in r["text"] for r in kept)
    assert st.checksum(str(d)) == st.checksum(str(d))


def test_oversize_and_ids():
    assert doc_id("a.warc.gz", 10) == doc_id("a.warc.gz", 10) != doc_id("a.warc.gz", 11)
    text, cs, err = decode_html("héllo".encode("latin-1") * 100, "text/html; charset=iso-8859-1")
    assert text.startswith("héllo") and err is None


def test_unknown_config_key():
    with pytest.raises(ConfigError, match="unknown key 'favour_precision'"):
        build_config(ExtractConfig, {"favour_precision": True}, "stage 'extract' in demo.yaml")


def test_few_bad_bytes_are_replaced_many_are_rejected():
    page = article("Valley", PARAS_EN * 5).encode("utf-8")
    text, cs, err = decode_html(page.replace(b"barley", b"barl\xffy", 1), "text/html; charset=utf-8")
    assert err is None and cs == "utf-8" and "barl\ufffdy" in text
    text, cs, err = decode_html(page.replace(b"the", b"\x81\x8d\x90\x9d\xff"), "text/html; charset=utf-8")
    assert text is None and "invalid" in err


EVAL_PAGES = Path(__file__).resolve().parents[2] / "shared" / "eval" / "extraction" / "pages.warc.gz"


@pytest.mark.parametrize("fast", [False, True])
def test_c_element_lookup_extracts_the_same_text(tmp_path, monkeypatch, fast):
    """The stage's C-level element lookup (use_c_element_lookup) gives the same rows as
    trafilatura's own lxml.html parser, on real pages (the eval set) and on the fixtures."""
    import lxml.html
    import trafilatura

    import stages.extract as extract_mod

    inputs = [tmp_path / "fixture.warc.gz"]
    write_warc(inputs[0], gz=True)
    if EVAL_PAGES.exists():
        inputs.append(EVAL_PAGES)
    ours = _stage(fast=fast)
    assert type(trafilatura.utils.load_html("<html><body><form><p>x</p></form><p>y</p></body></html>")
                .find(".//form")) is lxml.html.HtmlElement
    with_c = [ours.process_source(str(f)) for f in inputs]

    monkeypatch.setattr(extract_mod, "use_c_element_lookup", lambda parser: None)
    monkeypatch.setattr(trafilatura.utils, "HTML_PARSER", lxml.html.HTMLParser(
        collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True, remove_pis=True))
    theirs = _stage(fast=fast)
    assert type(trafilatura.utils.load_html("<html><body><form><p>x</p></form><p>y</p></body></html>")
                .find(".//form")) is lxml.html.FormElement
    for f, a in zip(inputs, with_c):
        b = theirs.process_source(str(f))
        assert a.kept.num_rows > 0
        assert a.kept.to_pylist() == b.kept.to_pylist(), f
        assert a.rejected.to_pylist() == b.rejected.to_pylist(), f
