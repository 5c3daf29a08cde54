# MultiAll — two commands do all set-up on a fresh Debian 12 machine (as root):
#   make demo   installs system packages + the venv, then plays the demo story
#   make test   installs the same, then runs the whole suite
# Re-running is fast: installs are skipped when their stamp is newer than the inputs.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := iproute2 nftables openssh-server openssh-client rsync serf bind9 \
	bind9-dnsutils sqlite3 postgresql python3 python3-yaml python3-psutil procps psmisc \
	util-linux iputils-ping monitoring-plugins-basic python3-dnspython python3-jinja2 shellcheck \
	openjdk-17-jre-headless python3-psycopg
SYS_STAMP := $(VENV)/.system-packages
PY_STAMP := $(VENV)/.python-packages
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help deps demo test sanity unit integration molecule lint build clean lab-down

help:
	@echo "make demo   - install everything, start a 3-node lab and play the demo story"
	@echo "make test   - install everything and run the whole test suite"
	@echo "make sanity - ansible-test sanity on the built and installed collection"
	@echo "make lint   - ruff + ansible-lint"
	@echo "make build  - build the collection tarball"

deps: $(SYS_STAMP) $(PY_STAMP)

# apt: only when a listed package is missing. Daemons must not start at install
# time (the lab starts its own, inside namespaces), so a policy-rc.d that denies
# service starts is put in place for the install if the machine has none.
$(SYS_STAMP): Makefile
	@mkdir -p $(VENV)
	@if dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -vq 'install ok installed' \
	    || [ "$$(dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | wc -l)" -ne "$(words $(APT_PACKAGES))" ]; then \
	  echo ">> installing system packages: $(APT_PACKAGES)"; \
	  own_policy=0; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; own_policy=1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); rc=$$?; \
	  [ $$own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; \
	  exit $$rc; \
	fi
	@touch $@

$(PY_STAMP): requirements.txt pyproject.toml $(SYS_STAMP)
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@echo ">> installing Python packages into $(VENV)"
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -r requirements.txt
	@$(BIN)/python -m pip install -q --no-deps -e .
	@# How the connector, tests and lab import module_utils (docs/connector.md): a .pth, no sys.path edits.
	@$(BIN)/python -c 'import sys, sysconfig; open(sysconfig.get_path("purelib") + "/multiall-collection.pth", "w").write(sys.argv[1] + "\n")' "$(CURDIR)/collection"
	@touch $@

demo: deps
	$(BIN)/python -m lab.demo

# Sanity first: it needs no lab, takes ~2 minutes and names every file:line it rejects.
test: deps
	$(MAKE) --no-print-directory sanity
	$(BIN)/python -m pytest tests
	$(MAKE) --no-print-directory molecule

# SANITY_ARGS narrows it, e.g. make sanity SANITY_ARGS="--test pylint lab/demo.py"
sanity: deps
	tests/sanity/run.sh $(SANITY_ARGS)

unit: deps
	$(BIN)/python -m pytest tests/unit

integration: deps
	$(BIN)/python -m pytest tests/integration tests/lab

molecule: deps
	@set -e; for role in roles/*/; do \
	  if [ -d "$$role/molecule" ]; then echo ">> molecule: $$role"; (cd "$$role" && $(CURDIR)/$(BIN)/molecule test --all); fi; \
	done

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint roles playbooks tests/molecule

build: deps
	$(BIN)/ansible-galaxy collection build --force .

lab-down:
	-$(BIN)/lab down

clean: lab-down
	rm -rf $(VENV) .pytest_cache .ruff_cache takelan-multiall-*.tar.gz
