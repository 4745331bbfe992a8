# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench clean

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

test: venv
	$(BIN)/pytest

test-fast: venv
	$(BIN)/pytest -m "not slow"

clean:
	rm -rf demo-output .sr-geo-work
