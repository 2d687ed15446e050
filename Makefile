# leafe: `make run` explores the default task with the default model; `make test` runs the tests.
# Both create or update .venv and install whatever is missing, so either works on a fresh clone.
# llama.cpp is compiled by leafe (engine/llama_build.py) for the instruction sets this CPU reports,
# AMX never, and the wheel is cached under a key made of exactly those options (~/.cache/leafe/wheels),
# so a build is only ever installed on a CPU that can run it; pip's own wheel cache is bypassed.
# Each new build is then checked once by a real decode in a child process (`leafe doctor --setup`).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LEAFE := $(VENV)/bin/leafe
STAMP := $(VENV)/.leafe-installed
# Chosen from measurements (bench/first_run.py, bench/leafe_round.py; README "Figures"): a HumanEval
# task the 0.5B model often but not always solves, with periodic reflection after two failed turns.
DEFAULT_TASK ?= code/humaneval/0
DEFAULT_ARGS ?= --budget 3 --reflect-every 2
TEST_MODEL := smollm2-135m
DEFAULT_MODEL := qwen2.5-coder-0.5b

.PHONY: setup venv engine sandbox java browser run test lint clean

setup: $(STAMP) engine sandbox java browser

# Two set-ups at once (make run and make test in two terminals) take turns: one lock for .venv.
LOCK := $(shell command -v flock >/dev/null 2>&1 && echo flock $(CURDIR)/.leafe-setup.lock)

# llama.cpp goes in before the project, so that pip never compiles it (natively) on its own.
$(STAMP): pyproject.toml
	@$(LOCK) $(MAKE) --no-print-directory venv

venv:
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ]; then \
	  set -e; \
	  test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install --quiet --upgrade pip; \
	  $(PY) -m engine.llama_build ensure; \
	  $(PY) -m pip install --quiet -e '.[train,dev,serve,worlds]'; \
	  $(PY) -m pip install --quiet --no-deps -e examples/leafe-guess; \
	  touch $(STAMP); \
	fi

# Every time, and cheap when nothing changed: a .venv that meets another CPU gets that CPU's build.
engine: $(STAMP)
	@$(LOCK) $(PY) -m engine.llama_build ensure

# The strong sandbox for model-written code is bubblewrap; install it where we can, else the
# sandbox says once that it falls back to resource limits.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
	      || echo "leafe: could not install bubblewrap; code runs under resource limits only"; \
	  else echo "leafe: bubblewrap missing (apt-get install bubblewrap); code runs under resource limits only"; fi; }

# ScienceWorld and TextWorld-Express run a JVM (Java 17); install a headless JRE where we can.
java:
	@command -v java >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq default-jre-headless) >/dev/null 2>&1 \
	      || echo "leafe: could not install Java; the scienceworld and textworld-express environments need it"; \
	  else echo "leafe: Java missing (apt-get install default-jre-headless); scienceworld and textworld-express need it"; fi; }

# MiniWoB++ runs its pages in a headless Chromium driven by chromedriver (Debian's packages).
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
	      || echo "leafe: could not install Chromium; the miniwob environment needs it"; \
	  else echo "leafe: Chromium missing (apt-get install chromium chromium-driver); miniwob needs it"; fi; }

run: setup
	$(LEAFE) models pull $(DEFAULT_MODEL)
	@$(LEAFE) doctor --setup --model $(DEFAULT_MODEL)
	$(LEAFE) explore $(DEFAULT_TASK) --model $(DEFAULT_MODEL) $(DEFAULT_ARGS) --tui

test: setup
	$(LEAFE) models pull $(TEST_MODEL)
	@$(LEAFE) doctor --setup --model $(TEST_MODEL)
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
