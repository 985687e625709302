"""Mini GPT trainer (PyTorch, CUDA or CPU) that will consume and verify the mixtures written
by the ``mix`` stage: ``train-*.bin`` / ``val-*.bin`` token arrays (``np.memmap`` with the
``dtype`` of ``meta.json``) and ``meta.json`` (tokenizer hash, vocab size, per-source token
counts, target and achieved weights). It arrives with its own issue; nothing here yet."""
