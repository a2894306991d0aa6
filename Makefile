# modelgate — every command a newcomer needs. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MODELS ?= models
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
ADMIN_PORT ?= 8003
PYTEST_ARGS ?=

.PHONY: help venv install protos check-protos models run lint format typecheck test test-busy unit integration perf-tools triton-peer browser prometheus-peer bench clean install-gpu

help:
	@echo "make run        set up .venv, build, write the example repository, serve it on :$(GRPC_PORT)"
	@echo "make test       set up .venv, then lint, type check and the whole test suite"
	@echo "make test-busy  the same with a CPU-bound process on every core beside it"
	@echo "make bench      perf_analyzer against the gateway (loadtests/), chaos run"
	@echo "make protos     regenerate gateway/_proto from protos/"
	@echo "make format     ruff format + autofix"

# The Cython extensions are built in place by the editable install: a change to them reinstalls.
$(STAMP): pyproject.toml setup.py kernels/_stats.pyx kernels/_stats.pxd gateway/_wire.pyx
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv install: $(STAMP)

# GPU: onnxruntime-gpu replaces onnxruntime (both provide the `onnxruntime` module).
install-gpu: $(STAMP)
	$(PY) -m pip uninstall -q -y onnxruntime
	$(PY) -m pip install -q '.[gpu]'

protos: $(STAMP)
	$(PY) tools/gen_protos.py

check-protos: $(STAMP)
	$(PY) tools/gen_protos.py --check

$(MODELS)/mlp/3/model.onnx: | $(STAMP)
	$(PY) -m gateway example-repository $(MODELS)

models: $(MODELS)/mlp/3/model.onnx

perf-tools: $(STAMP)
	bash harness/setup_perf_tools.sh $(VENV) >/dev/null

# A real headless browser (Debian's chromium) for the tests that open pages modelgate writes.
browser:
	bash harness/setup_browser.sh

# A real Prometheus (Debian's) for the test that evaluates the Grafana dashboard's queries.
prometheus-peer:
	bash harness/setup_prometheus.sh

# A real Triton Inference Server for tests and benchmarks, in its own venv (.venv-triton).
triton-peer:
	bash harness/setup_triton.sh

run: $(STAMP) models
	@echo
	@echo "Serving ./$(MODELS) on 127.0.0.1:$(GRPC_PORT) (metrics: http://127.0.0.1:$(METRICS_PORT)/metrics). Ctrl-C stops."
	@echo "Traffic: gateway.example.yaml (mlp: 90% v1, 10% canary v2, 25% mirrored to v3); edit it to move traffic live."
	@echo "Call it from another shell:"
	@echo "  $(PY) -c 'import numpy as np, tritonclient.grpc as g; c = g.InferenceServerClient(\"127.0.0.1:$(GRPC_PORT)\"); i = g.InferInput(\"x\", [1, 32], \"FP32\"); i.set_data_from_numpy(np.ones((1, 32), np.float32)); r = c.infer(\"mlp\", [i], headers={\"x-user-id\": \"alice\"}); p = r.get_response(); print(r.as_numpy(\"y\"), \"from version\", p.model_version, \"route\", p.parameters[\"route\"].string_param)'"
	@echo "Watch and move traffic with the admin API (127.0.0.1:$(ADMIN_PORT)):"
	@echo "  $(VENV)/bin/modelgate admin status        $(VENV)/bin/modelgate admin traffic mlp 1=50 2=50        $(VENV)/bin/modelgate admin shadow-report"
	@echo "Load it with perf_analyzer (make perf-tools first):"
	@echo "  LD_LIBRARY_PATH=\$$($(PY) -c 'import nvidia.cuda_runtime, os; print(os.path.join(nvidia.cuda_runtime.__path__[0], \"lib\"))') $(VENV)/bin/perf_analyzer -m mlp -u 127.0.0.1:$(GRPC_PORT) -i grpc --shape x:32 --concurrency-range 1:64:8"
	@echo
	exec $(VENV)/bin/modelgate serve --model-repository $(MODELS) --config gateway.example.yaml --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) --admin-port $(ADMIN_PORT)

LINTED := gateway kernels harness tests loadtests tools setup.py

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) perf-tools triton-peer browser prometheus-peer lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: $(STAMP) perf-tools triton-peer browser prometheus-peer
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

# The suite with a CPU-bound process on every core beside it (run it a few times: nothing may flip).
test-busy: $(STAMP)
	bash tools/busy.sh $(MAKE) test

bench: $(STAMP) perf-tools triton-peer
	$(PY) loadtests/bench_gateway.py
	$(PY) loadtests/bench_batching.py
	$(PY) loadtests/chaos.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache kernels/*.so kernels/*.c gateway/*.so gateway/_wire.c
