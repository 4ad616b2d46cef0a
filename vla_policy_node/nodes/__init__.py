"""ROS nodes: thin ROS I/O over the pure-Python cores."""
