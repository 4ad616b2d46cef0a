"""Simulation backends served as ROS robots by the sim bridge."""
