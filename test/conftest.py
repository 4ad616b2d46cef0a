import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def wait_until(predicate: Callable, timeout_s: float, what: str | Callable[[], str], period_s: float = 0.05):
    """Poll `predicate` every `period_s` until it returns something true (returned) or `timeout_s`
    passes; then fail the test naming `what` (a string, or a function describing what was seen)."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:g} s: {what() if callable(what) else what}", pytrace=False)
        time.sleep(period_s)
    return value


class BagWriter:
    """A rosbag2 folder written message by message with the installed vla_msgs and ROS 2 types:
    `types` builds messages, `header(t_ns)` stamps them, `put` declares a topic on first use."""

    def __init__(self, path: Path, storage: str = "sqlite3"):
        from rosbags.rosbag2 import StoragePlugin, Writer

        from vla_policy_node.data.bags import make_typestore

        self.typestore = make_typestore()
        self.types = self.typestore.types
        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.conns = {}

    def header(self, t_ns: int, frame_id: str = "world"):
        T = self.types
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t_ns // 10 ** 9,
                                                                               nanosec=t_ns % 10 ** 9),
                                        frame_id=frame_id)

    def put(self, topic: str, msgtype: str, t_ns: int, msg) -> None:
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
        self.writer.write(self.conns[topic], t_ns, self.typestore.serialize_cdr(msg, msgtype))

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def robots_dir() -> Path:
    return ROOT / "config" / "robots"


def record_episodes(out: Path, domain_id: int, tasks: str, seeds: str, max_steps: int, backend: str = "oracle",
                    checkpoint: str | None = None, mode: str = "", evaluator: dict | None = None):
    """Run the sim_demo graph (one process per node) for a few short episodes recorded under `out`
    (`mode`: the executor's, "" = the robot file's; the oracle always runs the sync loop; `evaluator`:
    more of the evaluator's parameters)."""
    from vla_policy_node.graph_runner import run_graph

    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    overrides = {"policy": {"backend": backend, **({"checkpoint": checkpoint} if checkpoint else {})},
                 # the scripted expert's own chunks, as `make data` records them (no ensembling)
                 "executor": {"mode": "sync" if backend == "oracle" else mode,
                              "merge": "replace" if backend == "oracle" else ""},
                 "evaluator": {"tasks": tasks, "seeds": seeds, "max_steps": str(max_steps), "output_dir": str(out),
                               "episode_timeout_s": "90.0", **(evaluator or {})}}
    result = run_graph("sim_demo", overrides, out / "logs", timeout_s=180)
    assert result["error"] is None, result["error"]
    return result


# the arm_ros2_control graph's recorded topics plus the scene camera (as `make data-panda` records them)
PANDA_RECORD = ("[/clock,/joint_states,/camera/scene/color/image_raw,/vla/sim/success,/vla/observation,"
                "/panda_arm_controller/joint_trajectory]")


def record_panda_episodes(out: Path, domain_id: int, seeds: str, max_steps: int):
    """Reach episodes of the scripted reach_ik expert on the embedded Panda, through the ros2_control graph."""
    from vla_policy_node.graph_runner import run_graph

    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    result = run_graph("arm_ros2_control", {"evaluator": {
        "seeds": seeds, "max_steps": str(max_steps), "output_dir": str(out), "training_seeds": "allow",
        "record_topics": PANDA_RECORD}},
        out / "logs", timeout_s=240)
    assert result["error"] is None, result["error"]


def train_tiny_act(dataset: Path, out: Path, repo_id: str, chunk: int, steps: int = 4) -> Path:
    """LeRobot's own training entry point (vla-lerobot-train = lerobot-train on our pins): a tiny ACT on
    a LeRobotDataset for a few steps; the saved policy directory."""
    import subprocess

    command = [str(Path(sys.executable).parent / "vla-lerobot-train"), f"--dataset.repo_id={repo_id}",
               f"--dataset.root={dataset}", "--policy.type=act", "--policy.push_to_hub=false", "--policy.device=cpu",
               "--policy.dim_model=32", "--policy.n_heads=2", "--policy.dim_feedforward=64",
               f"--policy.chunk_size={chunk}", f"--policy.n_action_steps={chunk}", "--policy.use_vae=false",
               "--policy.pretrained_backbone_weights=null", f"--steps={steps}", "--batch_size=4", "--num_workers=0",
               f"--save_freq={steps}", "--eval_freq=0", "--wandb.enable=false", f"--output_dir={out}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "checkpoints" / "last" / "pretrained_model"


def assert_checkpoint_serves(ckpt: Path, recorded: Path) -> None:
    """The checkpoint loads as a videovla backend and predicts a finite chunk for a recorded frame."""
    import numpy as np

    from vla_policy_node.core.embodiment import load_robot
    from vla_policy_node.data.dataset import load_dataset
    from vla_policy_node.models.backend import PolicyInput
    from vla_policy_node.models.registry import make_backend

    robot = load_robot("metaworld_sawyer")
    episode = load_dataset(recorded, robot, successful_only=False)[0]
    policy = make_backend("videovla", robot, checkpoint=str(ckpt))
    policy.reset(episode.instruction, seed=0)
    out = policy.predict(PolicyInput(0.0, episode.instruction, {"corner": episode.frames["corner"][0]},
                                     episode.states[0]))
    assert out.actions.shape == (8, 4) and np.all(np.isfinite(out.actions))


def stop_peer(executor, node, context, proc, log) -> None:
    """Tear down a test's rclpy peer and the node process it talked to."""
    import subprocess

    executor.shutdown()
    node.destroy_node()
    context.try_shutdown()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@contextlib.contextmanager
def free_running_sim_bridge(domain_id: int, max_steps: int, on_env_state):
    """A sim bridge free-running at 20 x real time in the test's own process (ROS domain `domain_id`),
    a peer calling `on_env_state` with each StateVector; yields (node, executor)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_msgs.msg import StateVector
    from vla_policy_node.nodes.common import RELIABLE_QOS, TOPICS
    from vla_policy_node.nodes.sim_bridge import SimBridgeNode

    os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = SimBridgeNode(context=context, parameter_overrides=[
        Parameter("lockstep", value=False), Parameter("real_time_factor", value=20.0),
        Parameter("max_steps", value=max_steps)])
    peer = rclpy.create_node("peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    peer.create_subscription(StateVector, TOPICS["env_state"], on_env_state, RELIABLE_QOS)
    try:
        yield node, executor
    finally:
        stop_in_process(node, peer, executor, context)


def stop_in_process(node, peer, executor, context) -> None:
    """Tear down a node run in the test's own process (its close() first) and its rclpy peer."""
    import rclpy

    node.close()
    executor.shutdown()
    node.destroy_node()
    peer.destroy_node()
    rclpy.shutdown(context=context)


def tiny_videovla_checkpoint(path: Path, backend: str = "videovla", action_head_std: float = 0.0, **config) -> Path:
    """Save a small untrained checkpoint of the videovla family (or bc) for the Sawyer robot file."""
    import numpy as np
    import torch

    from vla_policy_node.models.bc import BCConfig
    from vla_policy_node.models.components.diffusion import make_scheduler
    from vla_policy_node.models.components.text_encoder import TextEncoder
    from vla_policy_node.models.components.vae import FrameCodec, build_small_vae
    from vla_policy_node.models.videovla import VideoVLAConfig, VideoVLAPipeline
    from vla_policy_node.models.videovla.modeling_videovla import VideoVLATransformer

    torch.manual_seed(0)
    cfg = (BCConfig if backend == "bc" else VideoVLAConfig)(
        **{"hidden_size": 32, "num_layers": 2, "num_heads": 2, "image_size": 32, "latent_size": 4, **config})
    network = VideoVLATransformer(**cfg.transformer_config())
    if action_head_std:
        for p in network.action_out.parameters():
            torch.nn.init.normal_(p, std=action_head_std)
    codec = FrameCodec(build_small_vae(cfg.latent_channels, cfg.image_size // cfg.latent_size, width=8),
                       cfg.image_size, 1.0)
    meta = {"backend": backend, "embodiment": "metaworld_sawyer", "action_names": ["dx", "dy", "dz", "gripper"]}
    VideoVLAPipeline(cfg, network, codec, TextEncoder(max_tokens=cfg.text_tokens), make_scheduler(cfg.objective),
                     "quantile", {"q01": np.full(4, -1.0), "q99": np.full(4, 1.0)},
                     {"q01": np.array([-0.5, 0.3, 0.0, -0.03]), "q99": np.array([0.5, 1.0, 0.7, 0.03])},
                     meta).save_pretrained(path)
    return path


def tiny_vita_checkpoint(path: Path, **config) -> Path:
    """Save a small untrained VITA checkpoint for the Sawyer robot file (codebook initialized from
    random vectors, so the codes differ from each other)."""
    import numpy as np
    import torch

    from vla_policy_node.models.components.text_encoder import TextEncoder
    from vla_policy_node.models.components.vae import FrameCodec, build_small_vae
    from vla_policy_node.models.vita import VITAConfig, VITAPipeline
    from vla_policy_node.models.vita.modeling_vita import VITABackbone, VITATokenizer

    torch.manual_seed(0)
    cfg = VITAConfig(**{**TINY_VITA, **config})
    tokenizer = VITATokenizer(**cfg.tokenizer_config())
    tokenizer.quantize(torch.randn(64, cfg.vision_tokens, cfg.code_dim), torch.randn(64, cfg.action_tokens, cfg.code_dim))
    backbone = VITABackbone(**cfg.backbone_config())
    for p in backbone.context_out.parameters():      # decoders that see the hidden states (trained ones do)
        torch.nn.init.normal_(p, std=0.1)
    codec = FrameCodec(build_small_vae(cfg.latent_channels, cfg.image_size // cfg.latent_size, width=8),
                       cfg.image_size, 1.0)
    meta = {"backend": "vita", "embodiment": "metaworld_sawyer", "action_names": ["dx", "dy", "dz", "gripper"]}
    VITAPipeline(cfg, tokenizer.eval(), backbone.eval(), codec, TextEncoder(max_tokens=cfg.text_tokens), "quantile",
                 {"q01": np.full(4, -1.0), "q99": np.full(4, 1.0)},
                 {"q01": np.array([-0.5, 0.3, 0.0, -0.03]), "q99": np.array([0.5, 1.0, 0.7, 0.03])},
                 meta).save_pretrained(path)
    return path


def tiny_lingbot_checkpoint(path: Path, **config) -> Path:
    """Save a small LingBot-VA checkpoint for the Sawyer robot file with random weights everywhere
    (adaLN gates and output layers included, so every block acts: an untrained one is the identity)."""
    import numpy as np
    import torch

    from vla_policy_node.models.components.diffusion import make_scheduler
    from vla_policy_node.models.components.text_encoder import TextEncoder
    from vla_policy_node.models.components.vae import FrameCodec, build_small_vae
    from vla_policy_node.models.lingbot_va import LingBotVAConfig, LingBotVAPipeline
    from vla_policy_node.models.lingbot_va.modeling_lingbot_va import LingBotVATransformer

    torch.manual_seed(0)
    cfg = LingBotVAConfig(**{**TINY_LINGBOT, **config})
    network = LingBotVATransformer(**cfg.transformer_config())
    with torch.no_grad():
        for p in network.parameters():
            p.normal_(0.0, 0.1)
    codec = FrameCodec(build_small_vae(cfg.latent_channels, cfg.image_size // cfg.latent_size, width=8),
                       cfg.image_size, 1.0)
    meta = {"backend": "lingbot_va", "embodiment": "metaworld_sawyer", "action_names": ["dx", "dy", "dz", "gripper"]}
    LingBotVAPipeline(cfg, network.eval(), codec, TextEncoder(max_tokens=cfg.text_tokens), make_scheduler("flow"),
                      "quantile", {"q01": np.full(4, -1.0), "q99": np.full(4, 1.0)},
                      {"q01": np.array([-0.5, 0.3, 0.0, -0.03]), "q99": np.array([0.5, 1.0, 0.7, 0.03])},
                      meta).save_pretrained(path)
    return path


QWEN_ROBOTS = ("metaworld_sawyer", "panda_ros2_control")
TINY_QWEN = dict(image_size=56, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                 vision_depth=1, vision_embed_dim=32, vision_heads=2, expert_width=32, expert_layers=2, expert_heads=2,
                 num_inference_steps=3, horizon=24)   # unified rows: the Sawyer uses 24 of them, the Panda 16


def tiny_qwen_checkpoint(path: Path, robots=QWEN_ROBOTS, relative=(), **overrides) -> Path:
    """A random-weight Qwen-VLA checkpoint for `robots` (two by default; weights perturbed so every
    block acts) with the robot files' statistics; the robots in `relative` learned relative actions."""
    import torch
    from transformers import AutoTokenizer

    from vla_policy_node.core.embodiment import load_robot
    from vla_policy_node.models.components.diffusion import make_scheduler
    from vla_policy_node.models.components.text_encoder import DEFAULT_TEXT_ENCODER, resolve_text_encoder
    from vla_policy_node.models.qwen_vla import QwenVLAConfig
    from vla_policy_node.models.qwen_vla.modeling_qwen_vla import PromptTokenizer, QwenVLAActionExpert, build_backbone
    from vla_policy_node.models.qwen_vla.policy_qwen_vla import QwenVLAPipeline, embodiment_entry

    loaded = [load_robot(r) for r in robots]
    horizon = {**TINY_QWEN, **overrides}.get("horizon", QwenVLAConfig.horizon)
    cfg = QwenVLAConfig(**{**TINY_QWEN, **overrides}, embodiments={r.name: embodiment_entry(r, horizon, r.name in relative)
                                                                  for r in loaded})
    prompts = PromptTokenizer(AutoTokenizer.from_pretrained(resolve_text_encoder(DEFAULT_TEXT_ENCODER)),
                              cfg.tokens_per_view, cfg.max_text_tokens)
    cfg.vocab_size, cfg.image_token_id = len(prompts), prompts.image_token_id
    cfg.vision_start_token_id, cfg.vision_end_token_id = prompts.vision_start_id, prompts.vision_end_id
    torch.manual_seed(0)
    backbone = build_backbone(cfg.backbone_config()).eval()
    expert = QwenVLAActionExpert(**cfg.action_expert_config()).eval()
    with torch.no_grad():
        for p in expert.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stats = {r.name: {"action": r.action_stats, "state": r.state_stats} for r in loaded}
    QwenVLAPipeline(cfg, backbone, expert, make_scheduler("flow"), prompts, stats, {}).save_pretrained(path)
    return path


TINY_LINGBOT = dict(image_size=32, latent_size=4, video_width=32, action_width=16, num_layers=2, num_heads=2,
                    num_inference_steps=4, num_video_steps=2, cache_frames=3)


TINY_VITA = dict(image_size=32, latent_size=4, codebook_size=32, code_dim=16, tokenizer_width=32, tokenizer_layers=1,
                 tokenizer_heads=2, hidden_size=32, num_layers=2, num_heads=2)
