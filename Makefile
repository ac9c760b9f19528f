# cxr-book: two commands do everything.
#   make book   build the book on freshly generated phantoms (smoke profile)
#   make test   run the whole test suite (library + notebooks) in one pytest call
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cxrlib-installed
PROFILE ?= smoke

.PHONY: book test venv lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/cxrlib book --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check cxrlib tests benchmarks
	$(BIN)/ruff format --check cxrlib tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format cxrlib tests benchmarks
	$(BIN)/ruff check --fix cxrlib tests benchmarks

clean:
	rm -rf runs book/_build .pytest_cache
