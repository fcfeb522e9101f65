# tianji_ft: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
XTUNER_VERSION := 0.2.0
# The stamp is keyed on the lock and the package metadata: unchanged -> nothing to do.
STAMP := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | sha256sum | cut -c1-16)
SYSTEM_STAMP := $(VENV)/.system-deps
MODEL ?=
CONFIG ?=
DATA ?=
PYTEST_ARGS ?=

.PHONY: install system-deps lint demo test test-fast test-gguf mutation bench train pipeline configs doctor clean

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r $(LOCK)
	# XTuner pins bitsandbytes==0.45.0 and an old torch stack; our lock overrides them.
	$(PY) -m pip install -q --no-deps xtuner==$(XTUNER_VERSION)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

# Debian packages the tests use: Chromium for the web demo test, a CJK font for Chinese text.
system-deps: $(SYSTEM_STAMP)

$(SYSTEM_STAMP): | install
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list 2>/dev/null | grep -qi wenquanyi; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei >/dev/null; \
	else echo "make: cannot install chromium (needs root and apt-get); the browser test will be skipped" >&2; fi
	touch $@

demo: install
	$(PY) -m tianji_ft demo $(if $(MODEL),--model $(MODEL))

test: install system-deps lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The layers of docs/architecture.md, held by import-linter (.importlinter).
lint: install
	$(VENV)/bin/lint-imports

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# llama.cpp's Python binding compiles from source (7-11 minutes on 2 cores), so the
# check that llama.cpp runs our GGUF export lives here, outside `make test`.
LLAMA_CPP_VERSION := 0.3.36
test-gguf: install
	$(PY) -c "import llama_cpp" 2>/dev/null || $(PY) -m pip install -q llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -m pytest -q tests/weights/test_export_gguf.py $(PYTEST_ARGS)

# Mutation testing of the modules that guard data (tools/mutation/modules.toml, docs/mutation.md):
# ~30 minutes on 2 cores, so not part of `make test`. MUTATION_ARGS="--only data/split.py" for one module.
MUTATION_ARGS ?=
mutation: install
	$(PY) tools/mutation/run.py $(MUTATION_ARGS)

bench: install
	@set -e; for b in tools/bench_*.py; do echo "== $$b"; $(PY) $$b; done

train: install
	$(PY) -m tianji_ft train $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA))

pipeline: install
	$(PY) -m tianji_ft pipeline $(CONFIG) $(if $(MODEL),--model $(MODEL)) $(if $(DATA),--data $(DATA))

configs: install
	$(PY) -m tianji_ft.configs.render

doctor: install
	$(PY) -m tianji_ft doctor

clean:
	rm -rf work_dirs .pytest_cache
