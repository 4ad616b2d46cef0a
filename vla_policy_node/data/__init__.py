"""rosbag2 recording and reading."""
