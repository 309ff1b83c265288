# The two commands of the README (`make demo`, `make test`) both start with `make setup`,
# which is idempotent and fast once done: it installs what pgbackups needs on Debian 12.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
# The venv is built from Debian's python3 (3.11): the database user must be able to
# execute what the servers run, and a pyenv Python under /root is not traversable.
BASE_PYTHON := /usr/bin/python3
# python3-etcd by name: Patroni's package depends on one of python3-etcd, -consul, -kazoo,
# -kubernetes or -pysyncobj, and apt takes the pysyncobj we install (the charm's Raft) as
# enough; the local runtime's etcd needs python3-etcd (a fresh Debian 12 lacked it).
APT_PACKAGES := postgresql-15 postgresql-client-15 pgbackrest etcd-server etcd-client \
                patroni python3-etcd python3-pysyncobj python3-venv python3-psycopg2 openssl curl ca-certificates \
                procps
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: help setup apt venv promtool test lint unit demo bench bench-setup clean

help:
	@echo "make demo   - set up, then run the backup/restore demo on a local cluster"
	@echo "make test   - set up, then run linters and the whole test suite"
	@echo "make setup  - install Debian packages and the virtual environment (idempotent)"
	@echo "make lint   - ruff and mypy --strict"
	@echo "make bench  - the benchmark suite (see benchmarks/README.md)"

setup: apt venv promtool

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	  done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "setup: Debian packages present"; fi

# charm/requirements.txt constrains the venv: the charm is tested with the versions it ships.
$(VENV)/.installed: pyproject.toml charm/requirements.txt
	@test -x $(BASE_PYTHON) || { echo "setup: $(BASE_PYTHON) is missing (apt-get install python3)"; exit 1; }
	$(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,pack]' -c charm/requirements.txt
	touch $@

venv: $(VENV)/.installed
	@echo "setup: virtual environment ready at $(VENV)"

# promtool checks and unit-tests the charm's alert rules (tests/integration/test_alert_rules_promtool.py).
# Only the program is taken from Debian's prometheus package (extracted, not installed):
# installing it would start a Prometheus server listening without authentication.
PROMTOOL := .cache/prometheus/usr/bin/promtool
promtool: $(PROMTOOL)
$(PROMTOOL):
	@mkdir -p .cache/prometheus
	cd .cache/prometheus && apt-get download prometheus && dpkg -x prometheus_*.deb . && rm -f prometheus_*.deb
	@test -x $@

lint: setup
	$(VENV)/bin/ruff check src tests charm benchmarks
	$(VENV)/bin/ruff format --check src tests charm benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --config-file charm/mypy.ini

# pytest exits 5 when it collected nothing: that is never a pass here.
test: setup lint
	@set +e; $(VENV)/bin/pytest --durations=40 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test: pytest collected no tests - failing on purpose"; exit 1; fi; \
	exit $$rc

unit: setup
	$(VENV)/bin/pytest tests/unit charm/tests -m "not real" $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/pgbackups demo

# The benchmark compares with barman-cloud (Debian) and plots with matplotlib (the `bench` extra).
bench-setup: setup
	@dpkg-query -W -f='$${Status}\n' barman-cli-cloud 2>/dev/null | grep -q '^install ok installed' || { \
	  echo "bench-setup: installing barman-cli-cloud"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends barman-cli-cloud; }
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[dev,pack,bench]' -c charm/requirements.txt

bench: bench-setup
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
