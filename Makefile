# Two entry points for a fresh machine: `make demo` and `make test`. Both set up what they need
# (Debian packages, the project virtualenv, the vla_msgs build) and are fast the second time.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := $(VENV)/.stamps
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: setup demo demo-oracle data data-video data-panda data-panda-reach train train-kshot train-lingbot-history train-lerobot train-lerobot-act train-lerobot-diffusion test test-slow test-faults test-all bench bench-policies bench-latency bench-imagination bench-vita-ablations vita-ablation-table bench-lingbot bench-lingbot-history bench-qwen-vla bench-qwen-vla-ablations qwen-vla-ablation-table train-qwen-vla-panda-reach train-qwen-vla-panda-relative bench-qwen-vla-panda-reach bench-panda-localization bench-soak bench-distributed clean distclean

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
	$(VENV)/bin/vla-graph sim_demo --set policy.backend:=oracle --set executor.mode:=sync --set executor.merge:=replace --output-dir artifacts/demo_oracle $(DEMO_ARGS)

# Scripted-expert demonstrations (the policy's default `oracle` backend) recorded through the
# graph's own topics: 5 tasks x training seeds 0-19 (evaluation uses seeds >= 100).
# Read back with vla_policy_node.data.dataset.load_dataset("artifacts/data", robot).
data: setup
	$(VENV)/bin/vla-graph sim_demo --output-dir artifacts/data --set policy.backend:=oracle --set executor.mode:=sync --set executor.merge:=replace --set evaluator.seeds:=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19] --set evaluator.training_seeds:=allow --set evaluator.max_steps:=300

# Action-free videos for the K-shot protocol (docs/training.md): the same scripted expert on new seeds
# 20-69, recorded with the camera, proprio, instruction and success only; no command or action topic
# is in these bags. K demonstrations come from `make data` (vla-train --data-seeds 0-4).
VIDEO_SEEDS = [20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69]
data-video: setup
	$(VENV)/bin/vla-graph sim_demo --output-dir artifacts/data_video --set policy.backend:=oracle --set executor.mode:=sync --set executor.merge:=replace --set evaluator.seeds:=$(VIDEO_SEEDS) --set evaluator.training_seeds:=allow --set evaluator.max_steps:=300 \
		--set evaluator.record_topics:=[/clock,/joint_states,/vla/sim/ee_pose,/vla/sim/success,/vla/sim/camera/corner/image_raw,/vla/observation]

# Reaching demonstrations on the embedded MuJoCo Panda (ros2_control contract) from the scripted
# reach_ik expert, seeds 0-19: the camera sees the red target; env_state is recorded but never
# given to a learned policy.
# the arm_ros2_control graph's topics plus the scene camera (what a learned policy sees)
PANDA_RECORD = --set evaluator.record_topics:=[/clock,/joint_states,/camera/scene/color/image_raw,/vla/sim/ee_pose,/vla/sim/env_state,/vla/sim/success,/vla/observation,/panda_arm_controller/joint_trajectory,/vla/action_chunk,/vla/execution_feedback,/vla/executor_status,/vla/policy_status]
data-panda: setup
	$(VENV)/bin/vla-graph arm_ros2_control --output-dir artifacts/data_panda --set evaluator.seeds:=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19] --set evaluator.training_seeds:=allow \
		$(PANDA_RECORD)

# Reaching demonstrations for a policy that must locate the target from pixels: the same graph and expert on
# PANDA_REACH_TARGETS targets from seed 1000 on (the Panda reach training range is 1000-4999; evaluation 100-149,
# validation 300-499). 20 targets place at most 4% of new targets within 2 cm, 200 place 78%
# (`make bench-panda-localization`). About 1.5 s an episode here and 3.0 MB on disk (22.5 MB of raw frames, each
# message zstd-compressed by the recorder: 10 bags, 7.6 times smaller): 200 targets in about 5 minutes and 0.6 GB,
# 2000 in about 50 minutes and 6 GB.
PANDA_REACH_TARGETS ?= 200
data-panda-reach: setup
	$(VENV)/bin/vla-graph arm_ros2_control --output-dir artifacts/data_panda_reach --set evaluator.seeds:=[1000] \
		--set evaluator.episodes_per_task:=$(PANDA_REACH_TARGETS) $(PANDA_RECORD)

# The shipped checkpoints, as they were trained (resumable: add TRAIN_ARGS=--resume). All read the
# demonstrations of `make data`; bc trains the frame VAE that videovla, vita and lingbot_va reuse, so all
# see the same frame latents. videovla starts from the finished bc (its action network) and learns to
# imagine in 10000 more steps at lr 1e-4, its actions hidden from the imagined future (99 min with bc's
# 38; chosen on validation seeds 200-203: 20/20 against 15/20 for the earlier two-stage videovla).
# The correction head (A2C2-style, per step on the newest proprio) is fitted on videovla's chunks.
# qwen_vla in three: 8000 steps, 8000 more at lr 1e-4, 3600 more at lr 5e-5 (115 min in all; each
# later stage shipped only after it beat the one before on validation seeds 200-203).
TRAIN_ARGS ?=
TRAIN_COMMON = --data artifacts/data --steps 12000 --save-every 1000 $(TRAIN_ARGS)
VIDEOVLA = --future-offsets 8,16,32 --future-target delta --imagined-decoding residual --action-sees-video no
train: setup
	$(VENV)/bin/vla-train --family bc --output checkpoints/bc_metaworld $(TRAIN_COMMON) --vae-steps 2500
	$(VENV)/bin/vla-train --family videovla --output checkpoints/videovla_metaworld --data artifacts/data \
		--save-every 500 $(TRAIN_ARGS) --steps 10000 --lr 1e-4 $(VIDEOVLA) --init-from checkpoints/bc_metaworld
	$(VENV)/bin/vla-train-correction --base checkpoints/videovla_metaworld --data artifacts/data \
		--output checkpoints/videovla_metaworld/correction.safetensors
	$(VENV)/bin/vla-train --family vita --output checkpoints/vita_metaworld --data artifacts/data --save-every 500 \
		$(TRAIN_ARGS) --vae checkpoints/videovla_metaworld/vae --tokenizer-steps 2000 --steps 4500
	$(VENV)/bin/vla-train --family lingbot_va --output checkpoints/lingbot_va_metaworld --data artifacts/data \
		--save-every 500 $(TRAIN_ARGS) --vae checkpoints/videovla_metaworld/vae --steps 7000
	$(MAKE) data-panda
	$(VENV)/bin/vla-train --family qwen_vla --output artifacts/train/qwen_vla_stage1 --data artifacts/data \
		--also panda_ros2_control=artifacts/data_panda --steps 8000 --save-every 500 --proprio $(TRAIN_ARGS)
	$(VENV)/bin/vla-train --family qwen_vla --output artifacts/train/qwen_vla_stage2 --data artifacts/data \
		--also panda_ros2_control=artifacts/data_panda --steps 8000 --save-every 500 --proprio --lr 1e-4 \
		--init-from artifacts/train/qwen_vla_stage1 $(TRAIN_ARGS)
	$(VENV)/bin/vla-train --family qwen_vla --output checkpoints/qwen_vla_sawyer_panda --data artifacts/data \
		--also panda_ros2_control=artifacts/data_panda --steps 3600 --save-every 500 --proprio --lr 5e-5 \
		--init-from artifacts/train/qwen_vla_stage2 $(TRAIN_ARGS)

# The K-shot rows (docs/training.md, "Learning from action-free video"): K = 5 demonstrations a task (seeds
# 0-4 of `make data`), V = 50 action-free videos a task (`make data-video`, seeds 20-69). bc@K and
# bc@K+IDM at one budget; videovla starts from bc@K as the shipped videovla starts from bc, and learns to
# imagine on all 55 episodes a task (its action objective on the K, half of every batch).
KSHOT = --data artifacts/data --data-seeds 0-4 --save-every 500 $(TRAIN_ARGS)
train-kshot: setup
	$(VENV)/bin/vla-train --family bc --output checkpoints/bc_k5 $(KSHOT) --steps 4000 --vae-steps 1500
	$(VENV)/bin/vla-train --family bc --output checkpoints/bc_k5_idm_v50 $(KSHOT) --steps 4000 --vae-steps 1500 \
		--videos artifacts/data_video --label-videos idm
	$(VENV)/bin/vla-train --family videovla --output checkpoints/videovla_k5_v50 $(KSHOT) --steps 3000 --lr 1e-4 \
		$(VIDEOVLA) --init-from checkpoints/bc_k5 --videos artifacts/data_video --labelled-share 0.5

# Does LingBot-VA carry its own mistakes forward through its action history? (docs/results.md). Two second
# stages from the shipped checkpoint at one budget (2000 steps at lr 1e-4): with action-history dropout and
# noise, and without (the control for the added steps). `make bench-lingbot-history` compares them on
# validation seeds.
LINGBOT_STAGE = --data artifacts/data --init-from checkpoints/lingbot_va_metaworld --steps 2000 --lr 1e-4 \
	--save-every 500 $(TRAIN_ARGS)
train-lingbot-history: setup
	$(VENV)/bin/vla-train --family lingbot_va --output artifacts/train/lingbot_va_history_augmented $(LINGBOT_STAGE) \
		--action-history-dropout 0.5 --action-history-noise 0.1
	$(VENV)/bin/vla-train --family lingbot_va --output artifacts/train/lingbot_va_continued $(LINGBOT_STAGE)
artifacts/train/lingbot_va_continued/config.json:
	$(MAKE) train-lingbot-history

# LeRobot's own ACT and Diffusion Policy, trained by LeRobot's own entry point (vla-lerobot-train) on the
# same demonstrations as the rows above, exported as a LeRobotDataset with lossless frames (the pixels our
# families train on). Smaller than the papers' to fit this machine (docs/lerobot.md says what changed and
# why). Resumable: add LEROBOT_RESUME=1 to continue from each run's last checkpoint.
LEROBOT_DATA = artifacts/lerobot/metaworld_sawyer
LEROBOT_COMMON = --dataset.repo_id=local/metaworld_sawyer --dataset.root=$(LEROBOT_DATA) --policy.push_to_hub=false \
	--policy.device=cpu --num_workers=1 --save_freq=500 --log_freq=100 --eval_freq=0 --wandb.enable=false --seed=0
LEROBOT_ACT = --policy.type=act --policy.chunk_size=8 --policy.n_action_steps=8 --policy.dim_model=256 \
	--policy.dim_feedforward=1024 --policy.pretrained_backbone_weights=null --policy.optimizer_lr=1e-4 \
	--policy.optimizer_lr_backbone=1e-4 --batch_size=8
LEROBOT_DIFFUSION = --policy.type=diffusion --policy.n_obs_steps=1 --policy.horizon=16 --policy.n_action_steps=8 \
	--policy.drop_n_last_frames=8 --policy.down_dims=[128,256,512] --policy.resize_shape=[96,96] --policy.crop_ratio=0.875 \
	--policy.noise_scheduler_type=DDIM --policy.num_inference_steps=10 --batch_size=16
ACT_STEPS ?= 2400
# Diffusion Policy at batch 16 sees as many samples as ACT's 2400 steps at batch 8 (19200: 2.5 epochs).
DIFFUSION_STEPS ?= 1200
lerobot_run = $(if $(LEROBOT_RESUME),--resume=true --config_path=artifacts/train/$(1)/checkpoints/last/pretrained_model/train_config.json,$(2) --output_dir=artifacts/train/$(1))
train-lerobot: train-lerobot-act train-lerobot-diffusion
$(LEROBOT_DATA):
	$(VENV)/bin/vla-data export-lerobot artifacts/data --robot metaworld_sawyer --images --out $(LEROBOT_DATA)
train-lerobot-act: setup $(LEROBOT_DATA)
	$(VENV)/bin/vla-lerobot-train $(call lerobot_run,lerobot_act,$(LEROBOT_COMMON) $(LEROBOT_ACT) --steps=$(ACT_STEPS))
	rm -rf checkpoints/lerobot_act_metaworld && cp -r artifacts/train/lerobot_act/checkpoints/last/pretrained_model checkpoints/lerobot_act_metaworld
train-lerobot-diffusion: setup $(LEROBOT_DATA)
	$(VENV)/bin/vla-lerobot-train $(call lerobot_run,lerobot_diffusion,$(LEROBOT_COMMON) $(LEROBOT_DIFFUSION) --steps=$(DIFFUSION_STEPS))
	rm -rf checkpoints/lerobot_diffusion_metaworld && cp -r artifacts/train/lerobot_diffusion/checkpoints/last/pretrained_model checkpoints/lerobot_diffusion_metaworld

# Policy figures (artifacts/bench/policy.json), executor figures (artifacts/bench/executor.json) and
# the added latency of a policy served by vla-serve (artifacts/bench/remote.json).
bench: setup
	$(VENV)/bin/vla-bench policy
	$(VENV)/bin/vla-bench executor
	$(VENV)/bin/vla-bench remote
	$(VENV)/bin/vla-bench policy-node

# The policy leaderboard (artifacts/bench/policies.json / policies.md): every row of
# config/bench/policies.yaml on 5 tasks x 6 held-out seeds through the graph; cached per checkpoint.
bench-policies: setup
	$(VENV)/bin/vla-bench policies

# Success against inference delay (artifacts/bench/latency.json / .md / .png): the shipped checkpoints in
# lockstep with a simulated delay of d = 0, 4, 8, 16 steps per execution mode and remedy (config/bench/latency.yaml),
# then free-running on the wall clock; cached per cell.
bench-latency: setup
	$(VENV)/bin/vla-bench latency

# The world model under perturbation (config/bench/imagination.yaml): the leaderboard's 30 episodes
# clean and perturbed (monitor action none / replan / hold), shipped checkpoint, 10-13 min an arm on 2 cores.
bench-imagination: setup
	$(VENV)/bin/vla-bench imagination

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

# LingBot-VA's action-history rows on validation seeds 200-203 (config/bench/lingbot_va_history.yaml; rows c
# and d are trained first when missing, from `make data`): about 6 minutes a row on 2 cores.
bench-lingbot-history: setup artifacts/train/lingbot_va_continued/config.json
	$(VENV)/bin/vla-bench policies --config config/bench/lingbot_va_history.yaml --out artifacts/bench/lingbot_va_history

# Qwen-VLA: the shipped two-robot checkpoint reaching on the embedded Panda over the ros2_control and
# isaac contracts (20 held-out seeds each, artifacts/bench/qwen_vla/panda.md), then the paper's ablation
# at a short budget: shared zero-padded projection vs per-embodiment heads, one joint model vs one model
# per robot, each scored closed loop on both robots (artifacts/bench/qwen_vla/ablation.md).
QWEN_VLA = checkpoints/qwen_vla_sawyer_panda
HELD_OUT_REACH = [100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119]
QWEN_ABLATION = --steps 1000 --save-every 250 --proprio $(TRAIN_ARGS)
QWEN_ARMS = joint_shared joint_per_embodiment sawyer_only panda_only
bench-qwen-vla: setup
	for contract in ros2_control isaac; do \
		$(VENV)/bin/vla-graph arm_$$contract --set policy.backend:=qwen_vla --set policy.checkpoint:=$(QWEN_VLA) \
			--set evaluator.seeds:=$(HELD_OUT_REACH) --output-dir artifacts/bench/qwen_vla/panda_$$contract || exit 1; \
	done
	$(PY) scripts/panda_reach_table.py artifacts/bench/qwen_vla qwen_vla_ros2_control=artifacts/bench/qwen_vla/panda_ros2_control \
		qwen_vla_isaac=artifacts/bench/qwen_vla/panda_isaac:panda_isaac

# A stage on the Panda's demonstrations on 200 targets (`make data-panda-reach`) from the shipped checkpoint,
# the Sawyer's beside them (embodiment-balanced): the Sawyer keeps the checkpoint's statistics, the Panda's come
# from the new demonstrations (they reach joint positions the twenty targets never did). 8000 steps of 32.
# `make bench-qwen-vla-panda-reach` sets it against the shipped checkpoint on validation seeds (docs/results.md).
QWEN_PANDA_REACH = artifacts/train/qwen_vla_panda_reach
VALIDATION_REACH = [300,301,302,303,304,305,306,307,308,309,310,311,312,313,314,315,316,317,318,319]
train-qwen-vla-panda-reach: setup artifacts/data/report.json artifacts/data_panda_reach/report.json
	$(VENV)/bin/vla-train --family qwen_vla --output $(QWEN_PANDA_REACH) --data artifacts/data \
		--also panda_ros2_control=artifacts/data_panda_reach --steps 8000 --save-every 500 --proprio --lr 1e-4 \
		--init-from $(QWEN_VLA) --renormalize panda_ros2_control $(TRAIN_ARGS)
# The same stage with the Panda's actions learned relative to its joint positions (docs/results.md): 6000 steps.
QWEN_PANDA_RELATIVE = artifacts/train/qwen_vla_panda_relative
train-qwen-vla-panda-relative: setup artifacts/data/report.json artifacts/data_panda_reach/report.json
	$(VENV)/bin/vla-train --family qwen_vla --output $(QWEN_PANDA_RELATIVE) --data artifacts/data \
		--also panda_ros2_control=artifacts/data_panda_reach --steps 6000 --save-every 500 --proprio --lr 1e-4 \
		--init-from $(QWEN_VLA) --renormalize panda_ros2_control --relative-actions panda_ros2_control $(TRAIN_ARGS)
$(QWEN_PANDA_REACH)/config.json:
	$(MAKE) train-qwen-vla-panda-reach
artifacts/data_panda_reach/report.json:
	$(MAKE) data-panda-reach
artifacts/data/report.json:
	$(MAKE) data
$(QWEN_PANDA_RELATIVE)/config.json:
	$(MAKE) train-qwen-vla-panda-relative
bench-qwen-vla-panda-reach: setup $(QWEN_PANDA_REACH)/config.json $(QWEN_PANDA_RELATIVE)/config.json
	for arm in shipped:$(QWEN_VLA) panda_reach:$(QWEN_PANDA_REACH) panda_relative:$(QWEN_PANDA_RELATIVE); do \
		$(VENV)/bin/vla-graph arm_ros2_control --set policy.backend:=qwen_vla --set policy.checkpoint:=$${arm#*:} \
			--set evaluator.seeds:=$(VALIDATION_REACH) --output-dir artifacts/bench/qwen_vla_panda_reach/panda_$${arm%%:*} \
			|| exit 1; \
	done
	$(PY) scripts/panda_reach_table.py artifacts/bench/qwen_vla_panda_reach \
		shipped=artifacts/bench/qwen_vla_panda_reach/panda_shipped panda_reach=artifacts/bench/qwen_vla_panda_reach/panda_panda_reach \
		panda_relative=artifacts/bench/qwen_vla_panda_reach/panda_panda_relative
	$(VENV)/bin/vla-bench policies --config config/bench/qwen_vla_panda_reach.yaml --out artifacts/bench/qwen_vla_panda_reach/sawyer

bench-qwen-vla-ablations: setup
	$(VENV)/bin/vla-train --family qwen_vla --output artifacts/ablations/joint_shared --data artifacts/data \
		--also panda_ros2_control=artifacts/data_panda $(QWEN_ABLATION)
	$(VENV)/bin/vla-train --family qwen_vla --output artifacts/ablations/joint_per_embodiment --data artifacts/data \
		--also panda_ros2_control=artifacts/data_panda $(QWEN_ABLATION) --per-embodiment-heads
	$(VENV)/bin/vla-train --family qwen_vla --output artifacts/ablations/sawyer_only --data artifacts/data $(QWEN_ABLATION)
	$(VENV)/bin/vla-train --family qwen_vla --output artifacts/ablations/panda_only --robot panda_ros2_control \
		--data artifacts/data_panda $(QWEN_ABLATION)
	$(MAKE) qwen-vla-ablation-table

# each arm on the robots it was trained for: 5 tasks x seeds 100-101 on the Sawyer, 20 held-out reaches on the Panda
qwen-vla-ablation-table: setup
	for arm in $(QWEN_ARMS); do \
		if [ $$arm != panda_only ]; then $(VENV)/bin/vla-graph sim_demo --set policy.backend:=qwen_vla \
			--set policy.checkpoint:=artifacts/ablations/$$arm --set evaluator.seeds:=[100,101] \
			--output-dir artifacts/bench/qwen_vla/ablations/$$arm/sawyer || exit 1; fi; \
		if [ $$arm != sawyer_only ]; then $(VENV)/bin/vla-graph arm_ros2_control --set policy.backend:=qwen_vla \
			--set policy.checkpoint:=artifacts/ablations/$$arm --set evaluator.seeds:=$(HELD_OUT_REACH) \
			--output-dir artifacts/bench/qwen_vla/ablations/$$arm/panda || exit 1; fi; \
	done
	$(PY) scripts/qwen_vla_ablation_table.py artifacts/bench/qwen_vla/ablations $(addprefix artifacts/ablations/,$(QWEN_ARMS))

# How well the Panda's target can be located from pixels given 20, 200 or 2000 targets to learn from
# (the benchmark allows 20 demonstrations, one target each): a keypoint CNN trained only to localize,
# scored on 200 unseen seeds (artifacts/bench/panda_localization_probe*.json; about 25 min on 2 cores, the
# 224 px run about 40 more).
bench-panda-localization: setup
	$(PY) scripts/panda_localization_probe.py
	$(PY) scripts/panda_localization_probe.py --targets 20 --views scene,wrist --size 224 \
		--output artifacts/bench/panda_localization_probe_224.json

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
