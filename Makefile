# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint unit bench clean redis-server pushgateway prometheus postgresql chromium

install: $(STAMP)

# Re-installs only when pyproject.toml changes; a second `make install` does nothing. The distribution
# was called `dispatcher` before it became tim-dispatcher: a venv made then would hold both, and
# removing the old one after installing the new would take the shared `dispatcher` command with it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes dispatcher 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Sends the example jobs to the built-in sandbox. Each run starts a fresh journal, so it works twice in a row.
run: install
	mkdir -p build
	rm -f build/demo.outcomes.jsonl
	$(BIN)/dispatcher send jobs/*.jsonl --sandbox --out build/demo.outcomes.jsonl --summary-json build/demo.summary.json \
		--metrics-file build/demo.prom
	$(BIN)/dispatcher report build/demo.outcomes.jsonl
	@echo "Prometheus metrics of the run (node_exporter textfile format): build/demo.prom"
	@grep -E '^dispatcher_(batches_total|exit_code|last_success_timestamp_seconds)' build/demo.prom

# The docs build is strict (mkdocs.yml): a broken link or anchor, or a page missing from the nav, fails
# the lint. Not --quiet nor --verbose: in mkdocs 1.6 either one lets the warnings through (mkdocs#4126, #3991).
# NO_MKDOCS_2_WARNING: the theme's banner about its successor is not a warning of ours.
lint: install
	$(BIN)/ruff check dispatcher tests bench
	$(BIN)/ruff format --check dispatcher tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	env NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# The shared-budget tests run a real redis-server of their own (a free port on 127.0.0.1, no
# persistence); Debian's package is installed when it is missing (CI runs as root).
redis-server:
	command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server)

# The metrics tests push to a real Pushgateway of their own (a free port on 127.0.0.1, no persistence file).
pushgateway:
	command -v prometheus-pushgateway >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-pushgateway)

# The Grafana dashboard's test runs a real Prometheus of its own (a free port on 127.0.0.1, its config and
# TSDB in a temporary directory; Debian's service is never used).
prometheus:
	command -v prometheus >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus)

# The PostgreSQL journal tests run real servers of their own (initdb in a temporary directory, a free port on
# 127.0.0.1, as the postgres user when run as root); Debian's package is installed when it is missing.
postgresql:
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# The report page's test opens it in Debian's chromium, headless, with the network cut off (its own
# profile in a temporary directory; nothing of the user's browser is used).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Work stealing: a worker that runs out of tests takes some of the other's, so the long PostgreSQL fault tests
# never leave one core idle at the end (342 s with the default split, 283 s with it, on the 2-core machine).
unit: install redis-server pushgateway prometheus postgresql chromium
	$(BIN)/pytest -q -n 2 --dist worksteal

test: lint unit

# The baseline it compares against needs aiolimiter: the `bench` extra.
bench: install redis-server
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
