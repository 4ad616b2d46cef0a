"""ROS 2 nodes and pure-Python cores for running world-model and VLA policies on robots."""

__version__ = "0.1.0"
