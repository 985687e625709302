"""Shared fixtures. Tests run offline: outbound connections other than to this machine fail."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CURATE_NO_PROGRESS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _local_addresses() -> set[str]:
    addrs = {"127.0.0.1", "::1", "localhost"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            addrs.add(info[4][0])
    except OSError:
        pass
    return addrs


_LOCAL = _local_addresses()
_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and self.type == socket.SOCK_STREAM:
        host = address[0]
        ok = host in _LOCAL
        if not ok:
            try:
                ok = ipaddress.ip_address(host).is_loopback
            except ValueError:
                ok = False
        if not ok:
            raise OSError(f"network access blocked in tests: {address}")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (fresh clone): skipped")
    return SHARED


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    """The generated sample crawl (WARC shards + labels.jsonl), made once per session."""
    pytest.importorskip("mimesis")
    samplegen = pytest.importorskip("samples.samplegen")
    out = tmp_path_factory.mktemp("sample")
    samplegen.generate(out, seed=0)
    return out


@pytest.fixture(scope="session")
def demo_run(sample_corpus, tmp_path_factory) -> Path:
    """The demo pipeline (manifests/demo.yaml, local executor) run once on the sample crawl."""
    import yaml

    from curate.runner import run_pipeline

    spec = yaml.safe_load((ROOT / "manifests" / "demo.yaml").read_text())
    spec["stages"]["extract"]["input"]["paths"] = [str(sample_corpus)]
    spec["stages"]["mix"]["config"]["mixture"] = str(ROOT / "manifests" / "mixtures" / "demo.yaml")
    run = tmp_path_factory.mktemp("demo_run")
    run_pipeline(spec, run, executor="local", workers=1, log=lambda *_: None)
    return run
