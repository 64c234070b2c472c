# Two commands from a fresh clone: `make demo` (install, then one image from the bundled demo
# model) and `make test` (install the test extras, then the default test run). .ci/run uses `make test`.
PYTHON ?= python3
VENV := .venv

.PHONY: demo test

demo: $(VENV)/.installed
	$(VENV)/bin/emaki generate "1girl, pink hair, green eyes, smile"

# Two workers for CI's 2 cores, one test file at a time each (a module's server, browser or Ray
# cluster starts once), files in the order tests/conftest.py gives them (the longest first); each
# worker keeps to its share of the cores (tests/worker_cores.py). docs/design-notes.md, "Test run".
TEST_WORKERS ?= 2

test: $(VENV)/.test-installed
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# spandrel (upscaler models) without its torchvision: see pyproject.toml and docs/design-notes.md.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	$(VENV)/bin/pip install --quiet --no-deps 'spandrel>=0.4.2,<0.5'
	touch $@

# k-diffusion (the samplers' reference) without its dependencies: see pyproject.toml.
$(VENV)/.test-installed: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/pip install --quiet --no-deps k-diffusion==0.1.1.post1
	touch $@
