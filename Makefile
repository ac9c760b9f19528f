# cxr-book: two commands do everything.
#   make book   build the book on freshly generated phantoms (smoke profile)
#   make test   run the whole test suite (library + notebooks) in one pytest call
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cxrlib-installed
PROFILE ?= smoke

.PHONY: book test venv lint format clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/cxrlib book --profile $(PROFILE)

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The browser test drives Debian's Chromium. Install it when we can (root with apt-get);
# elsewhere the test skips and says why.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "could not install chromium: the browser test will be skipped"; \
	else echo "chromium not found and cannot be installed here: the browser test will be skipped"; fi

lint: $(STAMP)
	$(BIN)/ruff check cxrlib tests benchmarks
	$(BIN)/ruff format --check cxrlib tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format cxrlib tests benchmarks
	$(BIN)/ruff check --fix cxrlib tests benchmarks

clean:
	rm -rf runs book/_build .pytest_cache
