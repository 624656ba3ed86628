# Set-up and main jobs. `make demo` runs the product end to end on synthetic
# tickets; `make test` runs the test suite. Both create .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TRIAGE := $(VENV)/bin/triage
DEMO_DIR ?= demo

.PHONY: install system-deps demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Chromium drives the browser tests; a CJK font renders Chinese in plots and
# screenshots. Both come from Debian's packages and need root.
system-deps:
	@if [ -x /usr/bin/chromium ] && fc-list 2>/dev/null | grep -qi 'cjk'; then \
		echo "system packages present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium fonts-noto-cjk >/dev/null; \
	else \
		echo "warning: install chromium and fonts-noto-cjk for browser tests and Chinese plots"; \
	fi

demo: install
	$(TRIAGE) demo --out-dir $(DEMO_DIR)

test: install system-deps
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check features models training serving tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
