# Two entry points: `make demo` (the main job) and `make test` (the whole suite).
# Each creates .venv and installs what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
LINT   := tools/tekton-lint/node_modules/.bin/tekton-lint
HOOKS  := tools/webhooks-examples/node_modules/@octokit/webhooks-examples/package.json
# checkov has a large dependency set of its own: an isolated venv, never .venv (tests/test_checkov.py).
CHECKOV_VERSION := 3.3.30
CHECKOV := tools/checkov/.venv/.installed-$(CHECKOV_VERSION)

.PHONY: demo test lint render check-generated clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "taskyard needs Python >= 3.11"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

$(LINT): tools/tekton-lint/package.json
	cd tools/tekton-lint && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(HOOKS): tools/webhooks-examples/package.json
	cd tools/webhooks-examples && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHECKOV):
	@test -x tools/checkov/.venv/bin/python || $(PYTHON) -m venv tools/checkov/.venv
	tools/checkov/.venv/bin/python -m pip install -q 'checkov==$(CHECKOV_VERSION)'
	@rm -f tools/checkov/.venv/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/taskyard demo

# The image tests start Debian's dockerd and build a base with debootstrap (as root).
# docker-registry (Debian's distribution registry): the Tekton bundle push test's local registry.
DOCKER_TOOLS := /usr/sbin/dockerd /usr/sbin/debootstrap /usr/bin/docker-registry

$(DOCKER_TOOLS):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends docker.io debootstrap docker-registry >/dev/null; \
	else echo "note: not root or no apt: the docker tests will be skipped"; fi

# Debian's prometheus (with promtool) and prometheus-alertmanager (with amtool): the monitoring
# tests check and unit-test the rendered rules and config, and run both servers end to end.
# Their postinst starts no service in a container (no systemd; /usr/sbin/policy-rc.d exits 101);
# the tests start their own on free ports.
MONITORING_TOOLS := /usr/bin/prometheus /usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/amtool

$(MONITORING_TOOLS):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus prometheus-alertmanager >/dev/null; \
	else echo "note: not root or no apt: the monitoring tests will be skipped"; fi

test: $(STAMP) $(LINT) $(HOOKS) $(CHECKOV) $(DOCKER_TOOLS) $(MONITORING_TOOLS)
	$(BIN)/ruff check src tests benchmarks hera
	$(BIN)/ruff format --check src tests benchmarks hera
	$(BIN)/pytest -n 2 --durations=15

render: $(STAMP)
	$(BIN)/taskyard render

clean:
	rm -rf $(VENV) tools/*/node_modules
