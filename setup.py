"""ament_python package vla_policy_node (also pip-installable for the graph without a ROS install)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vla_policy_node"

NODES = {
    "vla_sim_bridge": "vla_policy_node.nodes.sim_bridge:main",
    "vla_perception": "vla_policy_node.nodes.perception:main",
    "vla_policy": "vla_policy_node.nodes.policy:main",
    "vla_executor": "vla_policy_node.nodes.executor:main",
    "vla_evaluator": "vla_policy_node.nodes.evaluator:main",
    "vla_imagination_monitor": "vla_policy_node.nodes.imagination_monitor:main",
    "vla_replay": "vla_policy_node.nodes.replay:main",
    "vla_task_runner": "vla_policy_node.nodes.task_runner:main",
    "vla_lifecycle_manager": "vla_policy_node.nodes.lifecycle_manager:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config/robots", glob("config/robots/*.yaml")),
        (f"share/{PACKAGE}/config/graphs", glob("config/graphs/*.yaml")),
        (f"share/{PACKAGE}/config/params", glob("config/params/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*.urdf")),
        *[(f"share/{PACKAGE}/{d}", [f for f in glob(f"{d}/*") if os.path.isfile(f) and not f.endswith("training_state.pt")])
          for d in glob("checkpoints/*") + glob("checkpoints/*/*") if os.path.isdir(d)],
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="vla_policy_node maintainers",
    maintainer_email="maintainers@vla-policy-node.org",
    description="ROS 2 nodes running world-model and VLA policies on robots",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{name}={target}" for name, target in NODES.items()] + [
            "vla-graph=vla_policy_node.graph_runner:main",
            "vla-train=vla_policy_node.train:main",
            "vla-data=vla_policy_node.data.cli:main",
            "vla-lerobot-train=vla_policy_node.lerobot_compat:train_main",
            "vla-train-correction=vla_policy_node.models.correction.training_correction:main",
            "vla-bench=vla_policy_node.bench.cli:main",
            "vla-eval=vla_policy_node.evaluation.cli:main",
            "vla-task=vla_policy_node.task_cli:main",
            "vla-serve=vla_policy_node.serving.server:main",
            "vla-sros2-policy=vla_policy_node.security:main",
        ],
    },
)
