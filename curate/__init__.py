"""curate: a data-centric corpus curation pipeline for LLM training."""

__version__ = "0.1.0"
