"""Mini GPT trainer (PyTorch, CUDA or CPU) that reads only the token-shard contract: a mixture
directory's ``meta.json``, its flat token arrays (``np.memmap``; SFT adds ``.mask.bin`` and
``.idx``) and ``tokenizer.json``.

- :mod:`trainer.model`: the GPT, checkpoints (``load_checkpoint(path) -> (model, config)``).
- :mod:`trainer.data`: batches as a pure function of (seed, batch index); per-source shares.
- :mod:`trainer.train`: the training loop (resume, spike rollback, bits per byte, MFU).
- :mod:`trainer.verify`: ``curate verify RUN``; :mod:`trainer.resize`: vocabulary growth;
  :mod:`trainer.ablation`: ``make ablation``.
"""
