# arnas-ray developer commands. `make quickstart` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install quickstart test lint bench report-screenshot clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	# test-time cross-check only: torchattacks pins requests 2.25, so no dependencies
	$(PY) -m pip install -c constraints.txt --no-deps torchattacks==3.5.1
	# benchmark only: benchmarks/search_step.py runs the reference ARNAS code, whose PGD is
	# cleverhans's (its torch PGD needs only torch and numpy; the package would pull in
	# tensorflow-probability, nose, mnist, ...), so no dependencies
	$(PY) -m pip install --no-deps cleverhans==4.0.0
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/arnas-ray sweep run examples/quickstart.yaml --storage runs

lint: $(STAMP)
	$(PY) -m ruff check arnas_ray tests benchmarks examples
	$(PY) -m mypy

# two pytest-xdist workers, each test file on one worker (module-scoped Ray instances and
# clusters stay shared by their module's tests): the Ray and cluster tests mostly wait on
# processes and polls, so two files at once fit two cores
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m benchmarks

report-screenshot: $(STAMP)
	$(PY) -m benchmarks.report_screenshot

clean:
	rm -rf $(VENV) .pytest_cache runs
