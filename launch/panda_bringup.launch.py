"""ros2 launch vla_policy_node panda_bringup.launch.py [robot:=NAME]: the graph in config/graphs/panda_bringup.yaml."""

from vla_policy_node.graph import launch_description


def generate_launch_description():
    return launch_description("panda_bringup")
