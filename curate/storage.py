"""Storage: local paths and URIs (``s3://bucket/key``, other pyarrow or fsspec file systems).

Inputs of source stages and run directories may be URIs. A URI is opened with pyarrow's file
systems: ``s3://`` with :class:`pyarrow.fs.S3FileSystem` configured from the usual environment
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``),
other schemes with :meth:`pyarrow.fs.FileSystem.from_uri`, and schemes pyarrow does not know
through fsspec when it is installed. ``file://`` URIs and plain paths are local.

A run directory on a URI is worked on in a local **mirror** (:class:`RemoteRun`):
``$CURATE_CACHE/<hash of the URI>`` (default ``~/.cache/curate``). The runner pulls the
stages it touches before it runs one, pushes every file a task wrote right after the task's
marker was recorded (the files first, the marker last, so a marker on the remote side always
names uploaded outputs), and at the end of each phase and stage mirrors the whole stage
directory up, ``_manifest.json`` and ``_SUCCESS`` last, deleting remote files the stage
removed. An object store writes each object whole (an S3 PUT is atomic), so a killed run
leaves every remote object complete. A run resumed on another machine (an empty mirror) pulls
the markers and outputs and redoes only what has no marker there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import CurateError

CHUNK = 8 << 20
MIRROR_INDEX = ".curate-mirror.json"


class StorageError(CurateError):
    """A URI could not be listed, read or written (one line naming the URI)."""


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (those are local paths)."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def local_path(path: str | os.PathLike) -> str:
    """A plain path for a local path or ``file://`` URI."""
    s = str(path)
    return s[len("file://"):] if s.startswith("file://") else s


def as_path(path: str | os.PathLike) -> Path | str:
    """A :class:`Path` for a local path, the URI itself (a string) for a URI."""
    return str(path) if is_uri(path) else Path(local_path(path))


def name_of(path: str | os.PathLike) -> str:
    """The last component of a path or URI (``s3://b/crawl/x.warc.gz`` -> ``x.warc.gz``)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_uri(path) else Path(local_path(path)).name


def parent_of(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except (OSError, pa.ArrowException, ValueError) as e:
        raise StorageError(f"{what}: {_one_line(e)}") from e


# --------------------------------------------------------------------------- file systems
_FS: dict[tuple[str, str], pafs.FileSystem] = {}


def _s3() -> pafs.FileSystem:
    kw: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        u = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kw["endpoint_override"], kw["scheme"] = u.netloc + u.path.rstrip("/"), u.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        kw["access_key"] = os.environ["AWS_ACCESS_KEY_ID"]
        kw["secret_key"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):
            kw["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kw)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system of a URI and the URI's path on it (``bucket/key`` for S3)."""
    u = urlsplit(uri)
    scheme, netloc = u.scheme.lower(), u.netloc
    if not scheme or (not netloc and scheme in ("s3", "s3a")):
        raise StorageError(f"{uri}: not a storage URI (expected scheme://bucket/key)")
    key = (scheme, netloc)
    if key not in _FS:
        with _errors(f"cannot open {scheme}://{netloc}"):
            if scheme in ("s3", "s3a"):
                _FS[key] = _s3()
            else:
                try:
                    _FS[key] = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    _FS[key] = _fsspec(scheme)
    fs = _FS[key]
    if isinstance(fs, pafs.S3FileSystem):
        path = netloc + u.path
    elif isinstance(fs, pafs.PyFileSystem):
        import fsspec.core

        path = fsspec.core.strip_protocol(uri)
    else:
        path = pafs.FileSystem.from_uri(uri)[1]
    return fs, path.rstrip("/") or path


def _fsspec(scheme: str) -> pafs.FileSystem:
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"pyarrow has no file system for {scheme}:// and fsspec is not installed") from None
    try:
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ImportError, ValueError) as e:
        raise StorageError(f"no file system for {scheme}://: {_one_line(e)}") from None


def _uri_of(template: str, fs_path: str, root: str) -> str:
    """The URI of ``fs_path`` (below ``root``, the fs path of the URI ``template``)."""
    return template.rstrip("/") + fs_path[len(root.rstrip("/")):]


# --------------------------------------------------------------------------- files
def kind(uri: str) -> str | None:
    """``"file"``, ``"dir"`` (a prefix with objects under it) or None (nothing there)."""
    fs, path = filesystem(uri)
    with _errors(f"cannot look up {uri}"):
        info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return "file"
    if info.type == pafs.FileType.Directory:
        return "dir"
    return None


def exists(uri: str) -> bool:
    return kind(uri) is not None


def _infos(uri: str, recursive: bool = True) -> tuple[str, list[pafs.FileInfo]]:
    fs, path = filesystem(uri)
    with _errors(f"cannot list {uri}"):
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    return path, [i for i in infos if i.type == pafs.FileType.File]


def list_files(uri: str, recursive: bool = True) -> list[str]:
    """URIs of the files under a prefix, sorted by path components (as local folders are walked)."""
    root, infos = _infos(uri, recursive)
    return sorted((_uri_of(uri, i.path, root) for i in infos), key=lambda s: s.split("/"))


def open_input(uri: str):
    """A readable binary stream of one object."""
    fs, path = filesystem(uri)
    with _errors(f"cannot read {uri}"):
        return fs.open_input_stream(path)


def sha256(uri: str) -> str:
    """sha256 of an object's content (streamed; what a local file's checksum is too)."""
    h = hashlib.sha256()
    with _errors(f"cannot read {uri}"), open_input(uri) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download(uri: str, dest: str | os.PathLike) -> Path:
    """Copy one object to ``dest`` atomically (temp file, fsync, rename)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.dl.tmp")
    try:
        with _errors(f"cannot download {uri}"), open_input(uri) as src, open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def upload(src: str | os.PathLike, uri: str) -> None:
    """Copy a local file to ``uri`` (on S3 the object appears whole or not at all)."""
    fs, path = filesystem(uri)
    with _errors(f"cannot upload {src} to {uri}"), open(src, "rb") as f, fs.open_output_stream(path) as out:
        while chunk := f.read(CHUNK):
            out.write(chunk)


def delete(uri: str) -> None:
    fs, path = filesystem(uri)
    with _errors(f"cannot delete {uri}"):
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local copy of an object, or of the files directly under a prefix (a folder), named
    as on the remote side (``.../<name>``) so that stable ids and URLs built from the name do
    not change. The copy sits in a folder derived from the URI (the same on every call, so
    messages that name it are the same on a rerun) and is removed afterwards."""
    base = Path(tempfile.gettempdir()) / "curate-inputs" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    dest = base / name_of(uri)
    what = kind(uri)
    if what is None:
        raise StorageError(f"input not found: {uri}")
    try:
        if what == "file":
            download(uri, dest)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            for f in list_files(uri, recursive=False):
                download(f, dest / name_of(f))
        yield dest
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- run directories
class LocalRun:
    """A run directory on the local file system: every hook is a no-op."""

    remote = False

    def __init__(self, path: str | os.PathLike):
        self.local = Path(local_path(path))
        self.uri = str(self.local)

    def pull(self, stages: list[str] | None = None) -> None:
        pass

    def push(self, paths: list[Path]) -> None:
        pass

    def sync(self, directory: Path) -> None:
        pass

    def logical(self, obj: Any) -> Any:
        return obj

    def close(self) -> None:
        pass


def _local_stat(p: Path) -> list[int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _remote_stat(info: pafs.FileInfo) -> list[int | None]:
    # whole seconds: object stores list LastModified with more precision than HEAD gives it
    return [info.size, int(info.mtime.timestamp()) if info.mtime is not None else None]


def _push_order(rel: str) -> int:
    """Data first, then JSON (markers), then the manifest, then _SUCCESS."""
    name = rel.rsplit("/", 1)[-1]
    return 3 if name == "_SUCCESS" else 2 if name == "_manifest.json" else 1 if name.endswith(".json") else 0


class RemoteRun:
    """A run directory on a URI, worked on in a local mirror (see the module docstring).

    The mirror keeps an index (``.curate-mirror.json``) of the size and modification time of
    each file on both sides when it was last transferred: a file is downloaded again only when
    the remote object or the local copy changed since, and uploaded only when the local copy
    changed. A stale or missing index only costs transfers. Object stores give modification
    times in whole seconds, so an object that someone else rewrites with the same size within
    the second of our last transfer would go unnoticed.
    """

    remote = True

    def __init__(self, uri: str, cache_dir: str | os.PathLike | None = None):
        self.uri = uri.rstrip("/")
        self.fs, self.root = filesystem(self.uri)
        base = Path(cache_dir or os.environ.get("CURATE_CACHE") or Path.home() / ".cache" / "curate")
        self.local = (base / hashlib.sha256(self.uri.encode()).hexdigest()[:16]).resolve()
        self.local.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, dict[str, list]] = {}
        try:
            data = json.loads((self.local / MIRROR_INDEX).read_text())
            if isinstance(data, dict) and data.get("uri") == self.uri:
                self._index = data.get("files", {})
        except (OSError, ValueError):
            pass
        self._saved = time.monotonic()

    # -- helpers
    def _rel(self, p: Path) -> str:
        return Path(p).resolve().relative_to(self.local).as_posix()

    def _fs_path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _save(self) -> None:
        from .shardio import atomic_write_bytes

        body = json.dumps({"uri": self.uri, "files": self._index}, sort_keys=True).encode()
        atomic_write_bytes(self.local / MIRROR_INDEX, body)
        self._saved = time.monotonic()

    def _list(self, prefix: str) -> dict[str, list]:
        with _errors(f"cannot list {join(self.uri, prefix)}"):
            infos = self.fs.get_file_info(
                pafs.FileSelector(self._fs_path(prefix.rstrip("/")), recursive=True, allow_not_found=True))
        n = len(self.root) + 1
        return {i.path[n:]: _remote_stat(i) for i in infos if i.type == pafs.FileType.File}

    # -- the hooks
    def pull(self, stages: list[str] | None = None) -> None:
        """Make the mirror of ``stages`` (default: the whole run) equal to the remote side.

        Stage folders are mirrored exactly (local files the remote side lacks are removed);
        a whole-run pull leaves local-only files outside the stages alone (reports, exports).
        """
        if stages is not None and not stages:
            return
        remote: dict[str, list] = {}
        for prefix in ([f"{s}/" for s in stages] if stages is not None else [""]):
            remote.update(self._list(prefix))
        for rel, st in sorted(remote.items()):
            local = self.local / rel
            ent = self._index.get(rel)
            if ent and st[1] is not None and ent["remote"] == st and ent["local"] == _local_stat(local):
                continue
            download(join(self.uri, rel), local)
            self._index[rel] = {"remote": st, "local": _local_stat(local)}
        for s in stages or []:
            d = self.local / s
            for p in sorted(d.rglob("*")) if d.is_dir() else []:
                if p.is_file() and p.relative_to(self.local).as_posix() not in remote:
                    p.unlink()
        scope = tuple(f"{s}/" for s in stages) if stages is not None else ("",)
        for rel in [r for r in self._index if r.startswith(scope) and r not in remote]:
            del self._index[rel]
            if stages is None:
                (self.local / rel).unlink(missing_ok=True)
        self._save()

    def push(self, paths: list[Path]) -> None:
        """Upload these files, in this order (a task's outputs, then its marker); files outside
        the mirror are not part of the run and stay where they are."""
        for p in paths:
            try:
                rel = self._rel(p)
            except ValueError:
                continue
            upload(p, join(self.uri, rel))
            with _errors(f"cannot look up {join(self.uri, rel)}"):
                info = self.fs.get_file_info(self._fs_path(rel))
            self._index[rel] = {"remote": _remote_stat(info), "local": _local_stat(Path(p))}
        if time.monotonic() - self._saved > 5:
            self._save()

    def sync(self, directory: Path) -> None:
        """Mirror a local folder of the run up: changed files (data, markers, ``_manifest.json``,
        ``_SUCCESS``, in that order), then remove remote files deleted locally (``_SUCCESS`` first)."""
        prefix = self._rel(directory) + "/"
        files = sorted(p for p in Path(directory).rglob("*") if p.is_file() and not p.name.endswith(".tmp")) \
            if Path(directory).is_dir() else []
        changed = [p for p in files if (self._index.get(self._rel(p)) or {}).get("local") != _local_stat(p)]
        self.push(sorted(changed, key=lambda p: _push_order(p.name)))
        gone = [r for r in self._index if r.startswith(prefix) and not (self.local / r).is_file()]
        for rel in sorted(gone, key=lambda r: -_push_order(r)):
            delete(join(self.uri, rel))
            del self._index[rel]
        self._save()

    def logical(self, obj: Any) -> Any:
        """``obj`` with mirror paths written as URIs (resume keys and manifests do not depend
        on where the mirror is)."""
        root = str(self.local)
        if isinstance(obj, str):
            return self.uri + obj[len(root):] if obj == root or obj.startswith(root + "/") else obj
        if isinstance(obj, dict):
            return {k: self.logical(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.logical(v) for v in obj]
        return obj

    def close(self) -> None:
        self._save()


def open_run(run: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> LocalRun | RemoteRun:
    """The run directory ``run``: a :class:`LocalRun` for a path, a :class:`RemoteRun` for a URI."""
    return RemoteRun(str(run), cache_dir) if is_uri(run) else LocalRun(run)


def local_run(run: str | os.PathLike) -> Path:
    """A local folder holding the run (for reading commands): the run itself, or its mirror
    after pulling the whole remote run."""
    store = open_run(run)
    if store.remote:
        if not exists(store.uri):
            raise StorageError(f"run directory not found: {store.uri}")
        store.pull()
    return store.local
