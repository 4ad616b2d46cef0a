"""ros2 launch vla_policy_node arm_ros2_control.launch.py [robot:=NAME]: the graph in config/graphs/arm_ros2_control.yaml."""

from vla_policy_node.graph import launch_description


def generate_launch_description():
    return launch_description("arm_ros2_control")
