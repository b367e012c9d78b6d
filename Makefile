# Set-up and everyday commands. `make demo` and `make test` are the README's two set-up commands:
# both create .venv and install everything first (idempotent; re-runs only when pyproject changes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# llama-cpp-python compiles llama.cpp; the native build crashes (SIGILL) on these VMs.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
# OpenMP spin-waiting makes generation ~10x slower on 2 shared cores.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: a CPU build lies on these machines; unpinned can pull a GPU build.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/evals run evalsets/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check harness tracing tests benchmarks
	$(VENV)/bin/ruff format --check harness tracing tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .evals .pytest_cache .mypy_cache .ruff_cache
