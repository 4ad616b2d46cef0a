"""ros2 launch vla_policy_node sim_demo.launch.py [robot:=NAME]: the graph in config/graphs/sim_demo.yaml."""

from vla_policy_node.graph import launch_description


def generate_launch_description():
    return launch_description("sim_demo")
