"""Named exceptions. The CLI turns each into one clear line and a non-zero exit code."""


class CurateError(Exception):
    """Base class for every error the CLI reports as one line."""


class ConfigError(CurateError):
    """A pipeline or stage configuration is invalid (unknown key, bad value, missing input)."""


class ConservationError(CurateError):
    """A stage lost or invented documents: input != kept + rejected."""


class ShardError(CurateError):
    """A shard could not be read or written, or its checksum does not match."""


class StageStateError(CurateError):
    """A finished stage on disk disagrees with the requested configuration."""


class WriteError(ShardError, OSError):
    """An output file could not be written (disk full, read-only file system, permissions).

    Also an ``OSError`` (``errno``, ``strerror``, ``filename`` = the output, never its temp
    file), so code that handles OSError still sees it; ``str()`` is the one line to show.
    """

    _HINTS = {
        28: "free space on that file system, or use a --run directory on another one",
        122: "the disk quota is exceeded: free space, or use a --run directory on another file system",
        30: "the file system is read-only: use a writable --run directory "
            "(curate inspect and curate sql still read a read-only run)",
        13: "check the permissions of the run directory, or use another --run directory",
        1: "check the permissions of the run directory, or use another --run directory",
    }

    def __str__(self) -> str:
        import errno as _errno

        code = _errno.errorcode.get(self.errno or 0)
        what = f"{self.strerror} ({code})" if code else str(self.strerror)
        hint = self._HINTS.get(self.errno or 0, "check the run directory's file system")
        return f"cannot write {self.filename}: {what}: {hint}"
