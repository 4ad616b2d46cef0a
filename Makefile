# Two entry points for a fresh machine: `make demo` and `make test`. Both set up what they need
# (Debian packages, the project virtualenv, the vla_msgs build) and are fast the second time.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup demo demo-oracle data test test-all bench clean distclean

setup: $(STAMPS)/system $(STAMPS)/python $(STAMPS)/interfaces $(STAMPS)/package

$(STAMPS)/system: scripts/install_system_packages.sh
	bash scripts/install_system_packages.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/python: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/interfaces: $(STAMPS)/python scripts/build_interfaces.sh scripts/fix_wheel_cmake_paths.py \
		vla_msgs/CMakeLists.txt vla_msgs/package.xml $(wildcard vla_msgs/msg/*.msg vla_msgs/srv/*.srv)
	bash scripts/build_interfaces.sh $(VENV)
	@touch $@

$(STAMPS)/package: $(STAMPS)/python setup.py setup.cfg package.xml
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	$(VENV)/bin/vla-graph sim_demo $(DEMO_ARGS)

# The scripted expert reading the privileged simulator state: the upper bound.
demo-oracle: setup
	$(VENV)/bin/vla-graph sim_demo --set policy.backend:=oracle --set executor.merge:=replace --output-dir artifacts/demo_oracle $(DEMO_ARGS)

# Scripted-expert demonstrations (the policy's default `oracle` backend) recorded through the
# graph's own topics: 5 tasks x training seeds 0-9 (evaluation uses seeds >= 100).
# Read back with vla_policy_node.data.dataset.load_dataset("artifacts/data", robot).
data: setup
	$(VENV)/bin/vla-graph sim_demo --output-dir artifacts/data --set policy.backend:=oracle --set executor.merge:=replace --set evaluator.seeds:=[0,1,2,3,4,5,6,7,8,9] --set evaluator.training_seeds:=allow --set evaluator.max_steps:=300

# Policy figures (artifacts/bench/policy.json) and executor figures (artifacts/bench/executor.json).
bench: setup
	$(PY) -m vla_policy_node.bench
	$(PY) -m vla_policy_node.bench_executor

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf build log artifacts .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info
