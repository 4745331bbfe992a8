# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast clean

venv: $(STAMP)

# torch is installed first and pinned by constraints.txt, so nothing later pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

demo: venv
	$(BIN)/sr-geo demo -o demo-output

# The system tests spend much of their time waiting on processes that start (a 13 s `sr-geo run` keeps
# one of two cores busy), so two workers fill two cores: 17.4 → 11.1–11.5 min on a 2-core EPYC. Each
# test file runs on one worker, so a module's fixtures start once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test: venv
	$(PYTEST)

test-fast: venv
	$(PYTEST) -m "not slow"

clean:
	rm -rf demo-output .sr-geo-work
