"""ros2 launch vla_policy_node replay.launch.py [robot:=NAME]: the graph in config/graphs/replay.yaml.

The bag is a parameter of the replay node: set it in config/params/replay.yaml (or pass a
parameter file); `vla-graph replay --set replay.bag:=<folder>` does the same without a ROS install."""

from vla_policy_node.graph import launch_description


def generate_launch_description():
    return launch_description("replay")
