"""curate: a data-centric corpus curation pipeline for LLM training.

``from curate import Pipeline`` builds and runs pipelines in Python (see curate/pipeline.py).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that importing a submodule (e.g. in a Ray worker) does not load the runner.
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    raise AttributeError(name)
