"""A2C2-style per-step correction heads of a base policy: training (the executor runs them, core/action_correction.py)."""
