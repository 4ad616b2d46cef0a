"""ros2 launch vla_policy_node arm_isaac.launch.py [robot:=NAME]: the graph in config/graphs/arm_isaac.yaml."""

from vla_policy_node.graph import launch_description


def generate_launch_description():
    return launch_description("arm_isaac")
