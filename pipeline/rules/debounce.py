"""Turns a per-frame condition per subject into incidents: one `start`, optional `update`s, one `end`.

- A subject's condition must hold for `min_seconds` before its incident starts; gaps shorter than
  `clear_seconds` (a missed detection) do not break that streak.
- Once started, the incident ends only after the condition has been false for `clear_seconds`
  (hysteresis: flicker at a zone edge, or a detector that misses a frame, does not end it).
- After an end, the same subject cannot start again for `cooldown_seconds`.
Times are seconds on the caller's clock (frame capture time), so dropped frames change nothing.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["start", "update", "end"]


@dataclass(slots=True)
class _State:
    streak_since: float | None = None  # first time true in the current unbroken streak
    last_true: float = 0.0
    active_since: float | None = None
    last_update: float = 0.0
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of an incident that `Debouncer.step` or `finish` reports."""

    kind: Kind
    subject: Hashable
    since: float  # when the incident started (its start time; for `end` too)


class Debouncer:
    """Incidents per subject from a per-frame condition (see the module docstring).

    Args:
        min_seconds: how long the condition must hold before an incident starts.
        clear_seconds: how long it must be false before the incident ends.
        cooldown_seconds: after an end, how long before the same subject can start again.
        update_seconds: period of `update` transitions while an incident is open; None for none.

    Raises:
        ValueError: a negative duration.
    """

    def __init__(self, *, min_seconds: float, clear_seconds: float, cooldown_seconds: float,
                 update_seconds: float | None = None) -> None:
        if min(min_seconds, clear_seconds, cooldown_seconds) < 0:
            raise ValueError(f"durations must be >= 0, got min {min_seconds}, clear {clear_seconds}, cooldown {cooldown_seconds}")
        self.min_seconds = min_seconds
        self.clear_seconds = clear_seconds
        self.cooldown_seconds = cooldown_seconds
        self.update_seconds = update_seconds
        self._states: dict[Hashable, _State] = {}

    @property
    def active(self) -> bool:
        """Whether any incident is open (checked per frame for the alert overlay)."""
        return any(s.active_since is not None for s in self._states.values())

    def step(self, true_subjects: Iterable[Hashable], now: float) -> list[Transition]:
        """Advances to `now` with the subjects whose condition holds this frame; returns the starts,
        updates and ends this causes."""
        out: list[Transition] = []
        seen = set(true_subjects)
        for subject in seen:
            st = self._states.get(subject)
            if st is None:
                st = self._states[subject] = _State()
            st.last_true = now
            if st.active_since is None:
                if st.streak_since is None:
                    st.streak_since = now
                cooled = st.ended_at is None or now - st.ended_at >= self.cooldown_seconds
                if now - st.streak_since >= self.min_seconds and cooled:
                    st.active_since = st.last_update = now
                    out.append(Transition("start", subject, now))
            elif self.update_seconds and now - st.last_update >= self.update_seconds:
                st.last_update = now
                out.append(Transition("update", subject, st.active_since))
        for subject, st in list(self._states.items()):
            if subject in seen:
                continue
            if st.active_since is not None:
                if now - st.last_true >= self.clear_seconds:
                    out.append(Transition("end", subject, st.active_since))
                    st.active_since, st.streak_since, st.ended_at = None, None, now
            elif now - st.last_true >= self.clear_seconds:
                st.streak_since = None  # the same hysteresis before a start: a short miss is no break
                if st.ended_at is None or now - st.ended_at >= self.cooldown_seconds:
                    del self._states[subject]
        return out

    def finish(self) -> list[Transition]:
        """Ends every active incident (the stream has ended)."""
        out = [Transition("end", k, s.active_since) for k, s in self._states.items() if s.active_since is not None]
        self._states.clear()
        return out
