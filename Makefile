# The two commands of the README: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := dev,convert,export,eval,serve,datasets
STAMP := $(VENV)/.installed

.PHONY: test test-slow demo bench install clean lint format

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python setup.py constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	# Its declared requirement is the full GPU tensorflow; the client code
	# only needs the protos, which work with tensorflow-cpu.
	$(BIN)/pip install --quiet --no-deps "tensorflow-serving-api>=2.21,<2.22"
	touch $(STAMP)

install: $(STAMP)

LINTED := yolor_keras tests benchmarks

test: $(STAMP) lint
	# The notebook runs beside the suite, and idle workers take queued tests
	# from busy ones, so the long tests at the end do not run alone.
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not slow" --durations=20 \
		--nbmake tests recipes/notebooks

# Formatting and lint (ruff.toml); `make format` fixes what can be fixed.
lint: $(STAMP)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --durations=15 tests

demo: $(STAMP)
	$(BIN)/python -m yolor_keras.demo

bench: $(STAMP)
	$(BIN)/python -m yolor_keras.bench models

clean:
	rm -rf $(VENV) build *.egg-info
