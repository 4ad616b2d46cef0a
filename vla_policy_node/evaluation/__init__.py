"""Offline evaluation of policies on recorded rosbag2 episodes: metrics, reports, the `vla-eval` command."""
