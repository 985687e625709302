# A Ray cluster: submit a pipeline as a Ray job (ray_jobs/submit.py; README "Running on a Ray
# cluster", tested by tests/test_ray_cluster.py).
#
#   make submit PIPELINE=manifests/demo.yaml RAY_ADDRESS=http://HEAD:8265 RUN=/shared/runs/demo \
#        INPUTS="extract=/shared/data/sample" [SUBMIT_ARGS="--no-wait"] [CURATE_ARGS="--workers 4"]
#
# RUN and INPUTS must be paths every node reaches (relative ones are made absolute against
# this directory). INPUTS: STAGE=PATH words that replace a source stage's inputs.
.PHONY: submit test-cluster image

submit:
	@test -n "$(RAY_ADDRESS)" || { echo "make submit needs RAY_ADDRESS=http://HEAD:8265" >&2; exit 2; }
	$(PY) -m ray_jobs.submit --address "$(RAY_ADDRESS)" $(PIPELINE) --run $(RUN) \
	    $(foreach i,$(INPUTS),--input $(i)) $(SUBMIT_ARGS) $(if $(CURATE_ARGS),-- $(CURATE_ARGS))

# The loopback two-node cluster test (slow: head + worker node, a node killed mid-stage).
test-cluster: setup lmplz
	$(PY) -m pytest -q -m slow tests/test_ray_cluster.py

# The node image (dependencies + lmplz + this checkout): docker/Dockerfile.
image:
	docker build -f docker/Dockerfile -t curate:$(shell git rev-parse --short HEAD 2>/dev/null || echo dev) .
