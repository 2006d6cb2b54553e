# Refundflow. `make dev` runs the whole system locally; `make test` runs every test.
UV ?= $(shell command -v uv 2>/dev/null || echo "$(CURDIR)/.venv-bootstrap/bin/uv")

.PHONY: dev test test-unit test-browser lint format migrate bench install clean browser screenshots

# uv itself comes from PyPI when it is not on the machine: Python 3.11+ and make are all a user needs.
$(CURDIR)/.venv-bootstrap/bin/uv:
	python3 -m venv .venv-bootstrap && .venv-bootstrap/bin/pip install --quiet uv

# Installed packages are compiled once, here: a process that may not write bytecode (PYTHONDONTWRITEBYTECODE, set on
# our CI machine) otherwise compiles them at every start: about 2 s of CPU for each service and test worker.
install: $(if $(shell command -v uv 2>/dev/null),,$(CURDIR)/.venv-bootstrap/bin/uv)
	$(UV) sync --frozen --compile-bytecode

dev: install
	$(UV) run --frozen refundflow-dev

# Tests run in parallel workers (pytest-xdist), each test module whole on one worker, so that its shared stack starts
# once. Most of a test's time is waiting on real processes, so workers pay even past the number of cores.
TEST_WORKERS ?= 3

test: install browser
	$(UV) run --frozen pytest -n $(TEST_WORKERS) --dist loadfile

# The browser tests drive Debian's Chromium (never a downloaded browser build): installed when missing.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium)

test-browser: install browser
	$(UV) run --frozen pytest tests/browser -m browser

# A PNG of every dashboard and customer page, desktop width, under var/screenshots/ (the browser tests' helpers).
screenshots: install browser
	$(UV) run --frozen python -m tests.browser.screenshots var/screenshots

test-unit: install
	$(UV) run --frozen pytest tests/unit

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy shared services devstack cli tests

format: install
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

migrate: install
	$(UV) run --frozen refundflow-migrate

bench: install
	$(UV) run --frozen python -m benchmarks.run

clean:
	rm -rf var .venv .venv-bootstrap
