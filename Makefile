# psd-gs: `make run` serves the app, `make test` runs the tests. Both set up .venv on first use.

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.requirements-stamp
HOST        ?= 127.0.0.1
PORT        ?= 7860
PYTEST_ARGS ?=
TEST_WORKERS ?= 2

.PHONY: run test venv browser clean

run: venv
	$(PY) app.py --host $(HOST) --port $(PORT)

# The suite runs in TEST_WORKERS pytest-xdist processes, a test file per process at a time (a file's tests
# share their servers and models); TEST_WORKERS=0 runs it in one process.
test: venv browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The virtualenv, with requirements.txt installed and psd-gs itself as an editable package (its
# `psd-gs` command; no other dependencies). Re-installs only when requirements.txt or pyproject.toml
# is newer than the stamp, so repeated runs cost nothing.
venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Chromium for the browser tests (Playwright drives /usr/bin/chromium). Installed with apt-get
# when missing and we are root; otherwise only a message, never a failure.
browser:
	@if [ -x /usr/bin/chromium ]; then \
		echo "browser: /usr/bin/chromium found"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "browser: installing chromium with apt-get"; \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-liberation; } \
			|| echo "browser: apt-get could not install chromium; browser tests will not run"; \
	else \
		echo "browser: /usr/bin/chromium is missing; install Chromium (as root: apt-get install -y chromium) for the browser tests"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
