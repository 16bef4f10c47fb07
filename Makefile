# The two commands a new user types are `make run` and `make test`; both install first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedsilo-installed
SYSTEM_PACKAGES ?= chromium openmpi-bin libopenmpi-dev
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: install run test lint bench chaos synth demo-aws clean

install: $(STAMP)

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || command -v python3 >/dev/null || { echo "Python 3.11 is needed: install python3.11 and retry"; exit 2; }
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	@test -x $(PY) || { $(PYTHON) -m venv $(VENV) 2>/dev/null || python3 -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock -r requirements-dev.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The eICU-shaped twin: synthesised once into ~/.cache/fedsilo/twins, read by the real reader.
run: install
	$(VENV)/bin/fedsilo simulate --twin --rounds 15

# node_modules: the IAM evaluator (@cloud-copilot/iam-simulate) that tests/stacks asks.
test: install lint node_modules/.package-lock.json
	$(PY) -m pytest -q

# ruff, the import contracts (fl_core never imports the edges; pure math never imports AWS)
# and mypy --strict on the Python packages.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	VENV=$(VENV) docker/lint.sh  # hadolint and checkov on the Dockerfiles
	rm -f cdk.out/*.template.json && $(PY) app.py  # the templates checkov reads (nag runs too)
	BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false .venv-checkov/bin/checkov --framework cloudformation --skip-download --compact --quiet --file cdk.out/*.template.json

bench: install
	$(PY) -m bench

# Faults and attacks against real server/client processes (127.0.0.1, a temporary folder):
# one table of figures, exit 1 if any misses its goal. `--quick` is the slow test's size.
chaos: install
	$(PY) -m chaos

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# Synthesises every stack offline with the pinned CDK v2 CLI (cdk.json points at .venv).
synth: install node_modules/.package-lock.json
	npx cdk synth --quiet

# The operator path of docs/operations.md end to end, offline: moto_server, stacks created by moto's
# CloudFormation from python app.py's templates, onboarding, a federation of separate processes.
demo-aws: install
	$(PY) examples/demo_aws.py

clean:
	rm -rf $(VENV) runs .pytest_cache cdk.out node_modules
