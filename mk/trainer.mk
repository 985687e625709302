# Trainer (trainer/): verify a run's mixtures, train on one, run the ablations.
.PHONY: verify train ablation test-trainer

TRAIN_DATA   ?= $(RUN)/mix
TRAIN_OUT    ?= $(RUN)/train
TRAIN_CONFIG ?= trainer/configs/tiny.yaml
TRAIN_ARGS   ?=
ABLATION_RUN ?= runs/ablation

# Runs the pipeline up to the mix stage (finished stages are skipped), then every check.
verify: mix
	$(CURATE) verify $(RUN)

# e.g. make train TRAIN_CONFIG=trainer/configs/gpt124m.yaml TRAIN_DATA=... (CUDA)
train: setup
	$(PY) -m trainer.train --config $(TRAIN_CONFIG) --data $(TRAIN_DATA) --out $(TRAIN_OUT) $(TRAIN_ARGS)

# Raw vs curated, and domain-only vs 1:5 continued pretraining; curves + table in $(ABLATION_RUN)/ablation/.
ablation: setup lmplz sample
	$(PY) -m trainer.ablation --run $(ABLATION_RUN)

test-trainer: setup
	$(PY) -m pytest -q tests/test_trainer*.py
