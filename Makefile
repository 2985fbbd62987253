# dermcam: `make run` brings the whole stack up locally; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deps-stamp
REQUIREMENTS := requirements-dev.txt functions/predict/requirements.txt functions/gradcam/requirements.txt

.PHONY: venv test lint run demo bench deploy clean

venv: $(STAMP)

# The virtualenv is rebuilt whenever a requirements file changes. The project's own
# packages (shared/dermcam, model_store, bench) are put on the path by a .pth file.
$(STAMP): $(REQUIREMENTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	printf '%s\n' "$(CURDIR)/shared" "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/dermcam-dev.pth"
	touch $@

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	$(PY) -m pytest

demo: venv
	$(PY) -m model_store.demo

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache test-output
