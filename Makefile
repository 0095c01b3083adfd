# pg_guardian: `make help` lists the targets. Every target installs what it needs first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
PG_CONFIG ?= pg_config
APT_PACKAGES := postgresql-15 postgresql-contrib postgresql-server-dev-15 postgresql-plpython3-15 python3-numpy \
	postgresql-15-cron python3-venv python3-dev build-essential chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup system-packages venv build install demo test test-fast bench lint clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

system-packages: ## install the Debian packages that are missing (idempotent)
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the controller and test tools

setup: system-packages venv ## everything a fresh Debian 12 machine needs

build: system-packages ## assemble the extension scripts into build/extension
	$(MAKE) -C extension PG_CONFIG=$(PG_CONFIG)

install: build ## PGXS install into the local server; with DATABASE_URL, also install/upgrade there
	$(SUDO) $(MAKE) -C extension install PG_CONFIG=$(PG_CONFIG)
	@if [ -n "$$DATABASE_URL" ]; then $(MAKE) -s venv && $(VENV)/bin/pg-guardian install --upgrade; fi

demo: setup install ## throwaway local cluster, sample dental schema, the guardian at work
	$(VENV)/bin/pg-guardian demo

test: setup install ## the whole test suite against a real PostgreSQL 15
	$(VENV)/bin/pytest

test-fast: setup install ## the suite without tests marked slow
	$(VENV)/bin/pytest -m "not slow"

bench: setup install ## benchmarks, printed as ratios against a baseline from the same run
	$(PY) -m bench

lint: setup build ## pgspot on the built script, ruff and mypy on the controller
	$(VENV)/bin/pgspot --ignore-lang plpython3u \
		--proc-without-search-path 'guardian._rule_matches(p_match_type text,p_matcher text,p_terms text[],p_value text)' \
		--proc-without-search-path 'guardian._anchors(p_kind text,p_column text)' \
		--proc-without-search-path 'guardian._uuid_bounds(p_column text)' \
	--proc-without-search-path 'guardian._gate(p_kind text,p_digits boolean)' \
	--proc-without-search-path 'guardian._listed_domains(p_domains text[])' \
	--proc-without-search-path 'guardian._surprise(p_count bigint,p_total bigint)' \
		build/extension/pg_guardian--$$(sed -n "s/^default_version = '\(.*\)'/\1/p" extension/pg_guardian.control).sql
	$(VENV)/bin/ruff check controller tests bench
	$(VENV)/bin/ruff format --check controller tests bench
	$(VENV)/bin/mypy controller/pg_guardian

clean: ## remove build output, the venv and throwaway clusters
	rm -rf build $(VENV) .pgdata .demo
