# Two entry points for a fresh machine (see README):
#   make demo   – the main job
#   make test   – the whole test suite (what CI runs)
# Each creates the virtualenv under the repo and installs what it needs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m coordinator.service.demo

lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) web-setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(STAMP)
	bash benchmarks/run_all.sh

clean:
	rm -rf $(VENV) .venv-bench .pytest_cache .hypothesis

# ── browser client (client_web/): Debian chromium + clang/lld, npm packages (pinned, package-lock.json) ──
# Idempotent via a stamp; apt only when a tool is missing (as root, which this machine is). Playwright (Python,
# from the dev extra) drives /usr/bin/chromium: it never downloads a browser.
WEB_STAMP := client_web/node_modules/.web-setup-stamp
.PHONY: web-setup
web-setup: $(WEB_STAMP)
$(WEB_STAMP): client_web/package.json client_web/package-lock.json $(STAMP)
	if ! command -v chromium >/dev/null || ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium clang lld; fi
	cd client_web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)
