"""Success, step count and stage progress of the running episode, from the simulator's topics (no rclpy).

The simulator publishes its privileged state (env_state: stamp, step index, values and, from
this package's sim bridge, the success flag at that state) after every step and its success flag
on a topic of its own, which is False on reset. Stamps are in s on the graph's clock (sim
time in simulation).
"""

from __future__ import annotations

import threading

from ..core.progress import StageTracker

CLOCK_JUMP_BACK_S = 0.5       # the clock this far before the episode's start went back (s)
METAWORLD_STATE_DIM = 39       # stage progress reads MetaWorld's observation layout (core/progress.py)


class EpisodeTracker:
    """Success, step count and stage progress of one episode that started at `start` (s).

    The success topic is ordered, so a True counts only after the first False of this episode
    (a True still in flight from the previous episode does not). `success_stamp` is the stamp of
    the last state before the first success. A state that carries the flag itself (success >= 0)
    decides instead (a True again only after this episode's first False): success then belongs to
    that very state, whatever order the two topics' messages are handled in (a loaded machine),
    and the flag topic only reports that one exists. Stage progress is measured only from MetaWorld's
    39-D state; `changed` is set on every state or success that concerns this episode."""

    def __init__(self, start: float, stages: StageTracker | None = None):
        self.start = start
        self.steps = 0
        self.last_stamp = start
        self.success = False
        self.success_stamp: float | None = None
        self.success_steps: int | None = None       # steps of the last state before the first success
        self.stages = stages
        self._flag = False
        self._env_state = None
        self._seen_reset = False
        self._reported = False
        self._state_flags = False                   # states carry the success flag
        self._state_seen_false = False              # ... and one of this episode's said False
        self.changed = threading.Event()

    def on_env_state(self, stamp: float, step: int, values=None, now: float | None = None,
                     success: int = -1) -> None:
        """A simulator state; states stamped before the episode's start are ignored, unless the
        graph's clock (`now`, s) is itself well before the start (CLOCK_JUMP_BACK_S; a clock that
        merely lags the reset stamp is not): then the clock went back (a simulator's timeline
        reset) and the episode goes on from this state's stamp."""
        if now is not None and now < self.start - CLOCK_JUMP_BACK_S and stamp <= now + 1e-9:
            self.start = self.last_stamp = stamp
        if stamp >= self.start - 1e-9:
            self.steps, self.last_stamp = max(self.steps, step), max(self.last_stamp, stamp)
            if success >= 0:
                self._state_flags = self._reported = True
                self._state_seen_false = self._state_seen_false or not success
                self._flag = bool(success) and self._state_seen_false
                if self._flag and not self.success:
                    self.success, self.success_stamp, self.success_steps = True, stamp, step
            if self.stages is not None and values is not None and len(values) == METAWORLD_STATE_DIM:
                self._env_state = values
                self.stages.update(values, self._flag)
            self.changed.set()

    def on_success(self, value: bool) -> None:
        self._reported = True
        if self._state_flags:                       # the states decide (see the class docstring)
            return
        if not value:
            self._seen_reset = True
        elif self._seen_reset and not self.success:
            self.success, self.success_stamp, self.success_steps = True, self.last_stamp, self.steps
            self.changed.set()
        self._flag = bool(value) and self._seen_reset
        if self.stages is not None and self._env_state is not None:
            self.stages.update(self._env_state, self._flag)

    @property
    def success_reported(self) -> bool:
        """A success signal arrived during this episode (a simulator's; a physical arm has none).
        A True that was never preceded by this episode's False does not count as success."""
        return self._reported

    @property
    def staged(self) -> bool:
        """Stage progress was measured (a MetaWorld state was seen)."""
        return self.stages is not None and self._env_state is not None

    @property
    def progress_score(self) -> float:
        """Stage progress score (core/progress.py); without stages 1 for success, else 0."""
        return self.stages.score if self.staged else float(self.success)
