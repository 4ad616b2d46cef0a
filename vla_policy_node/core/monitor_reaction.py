"""The executor's reaction to the imagination monitor (no rclpy).

The monitor flags each imagined frame whose divergence from the real frame at its time exceeds
the threshold, with the action the robot file asks for: replan (ask for a new chunk now, keep
executing the current plan until it comes) or hold (drop the plan, hold still until then). One
frame near the threshold flickers, so the executor reacts only after `consecutive` exceeded
frames in a row; a frame that is not exceeded starts the count again, and so does a reaction.
A dry-run executor only reports what it would do.
"""

from __future__ import annotations

from .executor import ChunkExecutor

REACTIONS = ("replan", "hold")


class MonitorReaction:
    def __init__(self, executor: ChunkExecutor, consecutive: int = 3):
        if consecutive < 1:
            raise ValueError(f"monitor_consecutive must be >= 1, got {consecutive}")
        self.executor = executor
        self.consecutive = consecutive
        self.exceeded_run = 0                            # exceeded frames in a row so far
        self.counts = {a: 0 for a in REACTIONS}          # reactions applied

    def on_verdict(self, episode_id: str, exceeded: bool, action: str, now: float) -> str:
        """One monitor verdict (frame exceeded or not, the action it asks for) at time `now` (s, the
        executor's clock). Verdicts of another episode are ignored. Returns "applied" when the
        executor re-planned or dropped its plan, "dry_run" when it would have, else ""
        (no reaction due, or disarmed: nothing to re-plan)."""
        if episode_id != self.executor.episode_id:
            return ""
        self.exceeded_run = self.exceeded_run + 1 if exceeded else 0
        if self.exceeded_run < self.consecutive or action not in REACTIONS:
            return ""
        self.exceeded_run = 0
        if self.executor.dry_run:
            return "dry_run"
        if not self.executor.replan(now, drop_plan=action == "hold"):
            return ""
        self.counts[action] += 1
        return "applied"
