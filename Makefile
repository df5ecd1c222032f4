# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install, fetch the pinned models, run the hybrid edge/cloud demo
#   make test   the same set-up plus test dependencies, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch from the CPU wheel: an unpinned torch would pull gigabytes of CUDA packages
CONSTRAINTS := -c constraints.txt
export YOLO_CONFIG_DIR ?= $(CURDIR)/.cache/ultralytics
PYTEST_ARGS ?=

.PHONY: demo test test-fast install install-test models clean bench bench-service bench-agent bench-sim bench-deadlines bench-rungs bench-uplink serve bento nginx promtool triton test-py310
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip  # not wheel or setuptools: models fetch needs neither

$(VENV)/.installed: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install -q $(CONSTRAINTS) -e '.[cloud,agent]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q $(CONSTRAINTS) -e '.[cloud,agent,export,torch,test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

models: $(VENV)/.installed
	$(VENV)/bin/yolo-edge models fetch --all

demo: install models
	$(PY) -m edge_agent demo --out out --seconds 20

# tests/bentos/test_load_balancing.py runs a real nginx in front of two service replicas
nginx:
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nginx; }

# tests/deploy/test_observability.py checks deploy/prometheus with promtool (Debian's
# prometheus package; its server is not started)
promtool:
	@command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# tests/triton run a real Triton server: the tritonserver binary (with the Python backend)
# inside the nvidia-pytriton wheel. It pins numpy<2, so it gets its own virtual environment;
# onnxruntime there runs the exported model inside Triton's Python backend.
TRITON_VENV ?= .venv-triton

$(TRITON_VENV)/.installed:
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip --disable-pip-version-check install -q nvidia-pytriton==0.7.0 'onnxruntime>=1.17'
	touch $@

triton: $(TRITON_VENV)/.installed

test: install-test models nginx promtool triton
	$(PY) -m pytest $(PYTEST_ARGS)

# the edit-test loop: everything but the tests marked slow or integration (real servers, subprocesses,
# namespaces, whole clips, exports, Ultralytics parity); `make test` runs them all
test-fast: install-test models
	$(PY) -m pytest -q -m "not slow and not integration and not parity" $(PYTEST_ARGS)

# Python 3.10, the stated minimum, for real: the SDK and agent tests on a 3.10 interpreter (pyenv's or
# Debian's python3.10). Not part of `make test`; tests/test_python_versions.py checks 3.10 statically there.
# Left out: Ultralytics references and the service (no [export]/[cloud] extras here) and slow tests.
PYTHON310 ?= python3.10
VENV310 ?= .venv310
test-py310: models
	[ -x $(VENV310)/bin/python ] || $(PYTHON310) -m venv $(VENV310)
	$(VENV310)/bin/python -m pip install -q --disable-pip-version-check $(CONSTRAINTS) -e '.[agent,test]'
	$(VENV310)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not parity" \
	    -k "not letterbox_matches_ultralytics" --ignore=tests/edge_agent/test_agent_integration.py \
	    tests/yolo_edge tests/edge_agent tests/models tests/test_docstring_examples.py tests/test_python_versions.py

# detect() against the raw model and Ultralytics; Detector.stream against the raw model on a core of its own
bench: install-test models
	$(PY) benchmarks/detect_bench.py --rounds 40
	$(PY) benchmarks/stream_bench.py --frames 60 --rounds 3

# servers on core 1 (taskset), load generator on core 0; with the no-inference backend vs BentoML's minimal service
bench-service: install-test models
	$(PY) benchmarks/service_bench.py --requests 40 --rounds 3 --bare-seconds 4

# the agent on core 0, its cloud stand-in (bentoml serve) on core 1: routing, not a fight for cores;
# then the agent's own CPU per frame by stage and its local inference with and without the rest
bench-agent: install-test models
	$(PY) benchmarks/agent_bench.py --seconds 20 --json out/agent_bench.json

# routing quality in the simulator (20 seeds, oracle bound, baseline), fidelity, a 500-device fleet
bench-sim: install-test models
	$(PY) benchmarks/sim_bench.py --seeds 20 --devices 500 --json out/sim_bench.json

bench-deadlines: install-test models
	$(PY) benchmarks/deadline_bench.py

# each rung of the upload ladder on real photos: bytes, encode time, agreement with the local
# answer; rewrites edge_agent/sim/uplinks/frame_sizes.json (the simulator's frame sizes)
bench-rungs: install-test models
	$(PY) benchmarks/rung_bench.py

# the real agent over a link shaped like a real uplink (needs root: a namespace, a veth, tbf)
bench-uplink: install-test models
	$(SUDO) $(PY) benchmarks/uplink_bench.py --traces verizon-lte,att-lte-driving --runs 3 --seconds 30 --json out/uplink_bench.json

# bentos.serve is `bentoml serve` with a metrics directory of its own (several per host)
serve: install models
	$(PY) -m bentos.serve --host 127.0.0.1 --port 3000

bento: install models
	$(PY) -m bentos.bake && $(VENV)/bin/bentoml build -f bentos/bentofile.yaml .

clean:
	rm -rf $(VENV) $(TRITON_VENV) $(VENV310) out photos .pytest_cache
