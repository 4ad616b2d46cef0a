"""Pure-Python logic (no rclpy): configuration, normalization, scheduling, safety, metrics."""
