# Two entry points for a fresh machine: `make demo` and `make test`. Both set up what they need
# (Debian packages, the project virtualenv, the vla_msgs build) and are fast the second time.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup demo demo-oracle data train test test-slow test-faults test-all bench bench-policies bench-vita-ablations vita-ablation-table bench-lingbot bench-soak bench-distributed clean distclean

setup: $(STAMPS)/system $(STAMPS)/python $(STAMPS)/interfaces $(STAMPS)/package

$(STAMPS)/system: scripts/install_system_packages.sh
	bash scripts/install_system_packages.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/python: requirements.txt requirements-nodeps.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/interfaces: $(STAMPS)/python scripts/build_interfaces.sh scripts/fix_wheel_cmake_paths.py \
		vla_msgs/CMakeLists.txt vla_msgs/package.xml $(wildcard vla_msgs/msg/*.msg vla_msgs/srv/*.srv vla_msgs/action/*.action) \
		$(wildcard interfaces/control_msgs/*.* interfaces/control_msgs/*/*)
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
# graph's own topics: 5 tasks x training seeds 0-19 (evaluation uses seeds >= 100).
# Read back with vla_policy_node.data.dataset.load_dataset("artifacts/data", robot).
data: setup
	$(VENV)/bin/vla-graph sim_demo --output-dir artifacts/data --set policy.backend:=oracle --set executor.merge:=replace --set evaluator.seeds:=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19] --set evaluator.training_seeds:=allow --set evaluator.max_steps:=300

# The shipped checkpoints, as they were trained (resumable: add TRAIN_ARGS=--resume). All read the
# demonstrations of `make data`; bc and vita reuse videovla's frame VAE so all three see the same frame latents.
# videovla's actions do not attend to its imagined future (chosen on validation seeds 200-203).
TRAIN_ARGS ?=
TRAIN_COMMON = --data artifacts/data --steps 12000 --save-every 1000 $(TRAIN_ARGS)
train: setup
	$(VENV)/bin/vla-train --family videovla --output checkpoints/videovla_metaworld $(TRAIN_COMMON) --steps 9000 \
		--future-offsets 8,16,32 --future-target delta --imagined-decoding residual --vae-steps 2500 \
		--action-sees-video no
	$(VENV)/bin/vla-train --family bc --output checkpoints/bc_metaworld $(TRAIN_COMMON) \
		--vae checkpoints/videovla_metaworld/vae
	$(VENV)/bin/vla-train --family vita --output checkpoints/vita_metaworld --data artifacts/data --save-every 500 \
		$(TRAIN_ARGS) --vae checkpoints/videovla_metaworld/vae --tokenizer-steps 2000 --steps 4500
	$(VENV)/bin/vla-train --family lingbot_va --output checkpoints/lingbot_va_metaworld --data artifacts/data \
		--save-every 500 $(TRAIN_ARGS) --vae checkpoints/videovla_metaworld/vae --steps 7000

# Policy figures (artifacts/bench/policy.json), executor figures (artifacts/bench/executor.json) and
# the added latency of a policy served by vla-serve (artifacts/bench/remote.json).
bench: setup
	$(VENV)/bin/vla-bench policy
	$(VENV)/bin/vla-bench executor
	$(VENV)/bin/vla-bench remote

# The policy leaderboard (artifacts/bench/policies.json / policies.md): every row of
# config/bench/policies.yaml on 5 tasks x 6 held-out seeds through the graph; cached per checkpoint.
bench-policies: setup
	$(VENV)/bin/vla-bench policies

# VITA's ablations: shared vs separate codebooks, with vs without the next-frame objective, each arm
# trained on the same short budget (about 15 min each on 2 cores), then scored open loop on the
# leaderboard's 30 reference episodes (the oracle row's bags: run `make bench-policies` first) beside
# each arm's codebook use: artifacts/bench/vita_ablations/ablation.md.
VITA_ABLATION = --data artifacts/data --vae checkpoints/videovla_metaworld/vae --tokenizer-steps 600 --steps 1200 \
	--save-every 300 $(TRAIN_ARGS)
VITA_ARMS = vita_shared vita_separate vita_no_next_frame
bench-vita-ablations: setup
	$(VENV)/bin/vla-train --family vita --output artifacts/ablations/vita_shared $(VITA_ABLATION)
	$(VENV)/bin/vla-train --family vita --output artifacts/ablations/vita_separate $(VITA_ABLATION) --separate-codebooks
	$(VENV)/bin/vla-train --family vita --output artifacts/ablations/vita_no_next_frame $(VITA_ABLATION) --no-next-frame
	$(MAKE) vita-ablation-table

vita-ablation-table: setup
	for arm in $(VITA_ARMS); do \
		$(VENV)/bin/vla-eval offline --bag artifacts/bench/policies/oracle/closed_loop --robot metaworld_sawyer \
			--checkpoint artifacts/ablations/$$arm --stride 8 --videos 0 --output artifacts/bench/vita_ablations/$$arm || exit 1; \
	done
	$(PY) scripts/vita_ablation_table.py artifacts/bench/vita_ablations $(addprefix artifacts/ablations/,$(VITA_ARMS))

# Closed-loop evaluation on a local Ray instance (1 and 2 workers) against the same 10 episodes run
# locally: episode-by-episode equality, wall time and the per-episode overhead (distributed.json).
# LingBot-VA: per-chunk latency with the KV cache vs recomputing the history (kv_cache.json), then
# sync vs naive async vs FDM-grounded async with the simulator free-running (async_grounding.json/.md).
bench-lingbot: setup
	$(VENV)/bin/vla-bench kv-cache
	$(VENV)/bin/vla-bench async-grounding

bench-distributed: setup
	$(VENV)/bin/vla-bench distributed

# The learned policy free-running for 30 minutes of sim time with faults at random times: memory,
# threads, descriptors and latency over time, beside the fault cases in artifacts/bench/faults.json.
# About 1 h 45 min on 2 cores (the graph runs at ~0.28x real time there).
bench-soak: setup
	$(VENV)/bin/vla-bench soak --sim-minutes 30

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The suites marked slow: full graphs, training, recorded episodes (CI runs them after `make test`).
test-slow: setup
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Fault injection through the graph (artifacts/bench/faults.json / .md); `make test` runs one case.
test-faults: setup
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf build log artifacts .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info
