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
