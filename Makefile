# leafe: `make run` explores the default task with the default model; `make test` runs the tests.
# Both create or update .venv and install whatever is missing, so either works on a fresh clone.
# llama-cpp-python compiles llama.cpp once (~15-20 min on two cores); pip keeps the built wheel in
# its cache, so later set-ups reuse it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LEAFE := $(VENV)/bin/leafe
STAMP := $(VENV)/.leafe-installed
DEFAULT_TASK ?= code/suite/digit-collapse
TEST_MODEL := smollm2-135m
DEFAULT_MODEL := qwen2.5-coder-0.5b

.PHONY: setup sandbox run test lint clean

setup: $(STAMP) sandbox

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "leafe: installing (the first time compiles llama.cpp: 15-20 min on two cores)"
	$(PY) -m pip install --quiet -e '.[train,dev]'
	@touch $(STAMP)

# The strong sandbox for model-written code is bubblewrap; install it where we can, else the
# sandbox says once that it falls back to resource limits.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
	      || echo "leafe: could not install bubblewrap; code runs under resource limits only"; \
	  else echo "leafe: bubblewrap missing (apt-get install bubblewrap); code runs under resource limits only"; fi; }

run: setup
	$(LEAFE) models pull $(DEFAULT_MODEL)
	$(LEAFE) explore $(DEFAULT_TASK) --model $(DEFAULT_MODEL) --tui

test: setup
	$(LEAFE) models pull $(TEST_MODEL)
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
