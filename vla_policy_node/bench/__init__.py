"""Benchmarks: the policy leaderboard, one checkpoint's figures, the executor's figures."""
