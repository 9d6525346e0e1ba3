"""Operator control of a running federation: start, pause, resume and stop between rounds.

:class:`RunControl` is a small thread-safe state machine shared by the run loop
(:meth:`fedfort.run.federation.Federation.run`) and whoever controls it (the operator API). The
loop calls :meth:`RunControl.between_rounds` before every round: that is the only place where a
pause holds, a stop ends the run and queued commands (a rollback) run, so every one of them
meets the federation in a clean, committed state: the round in progress always finishes and
commits (or is discarded whole by the engine), nothing is lost, and a stopped run can be
resumed from its checkpoints (``--resume``).

States::

    held --start--> running --pause--> paused --resume--> running
    held | running | paused --stop--> stopping --(loop ends)--> stopped
    running --(last round committed)--> finished

Commands that change the federation (:meth:`RunControl.submit`) are run by the loop's own
thread between rounds, so the engine, its checkpoint store and its audit trail keep a single
writer; the caller waits for the result up to a timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from fedfort.errors import ConfigError

__all__ = ["CommandPending", "RunControl"]

_STATES: Final = ("held", "running", "paused", "stopping", "stopped", "finished")


class CommandPending(ConfigError):
    """A command was queued but the run loop has not reached it yet (the round is running)."""


@dataclass
class _Command:
    what: str
    fn: Callable[[], dict[str, Any]]
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: BaseException | None = None


class RunControl:
    """What operators asked of the run loop; see the module docstring.

    ``hold`` makes the run wait at its start until :meth:`start` is called.
    """

    def __init__(self, *, hold: bool = False) -> None:
        self._cond = threading.Condition()
        self.state = "held" if hold else "running"
        self.round = 0
        #: whether a run loop is consulting this control now
        self.attached = False
        #: whether the run loop is parked between rounds (held or paused) right now
        self.parked = False
        self._commands: deque[_Command] = deque()
        #: (time, state) of every transition, for status and tests
        self.history: list[tuple[float, str]] = [(time.time(), self.state)]

    # ------------------------------------------------------------------ operator side

    def status(self) -> dict[str, Any]:
        """The state, the last round the loop saw, and whether a loop is attached."""
        with self._cond:
            return self._status_locked()

    def _move(self, allowed_from: tuple[str, ...], to: str, verb: str) -> dict[str, Any]:
        with self._cond:
            if self.state == to:
                return self._status_locked()
            if self.state not in allowed_from:
                raise ConfigError(f"cannot {verb} a run that is {self.state}")
            self._set_locked(to)
            return self._status_locked()

    def start(self) -> dict[str, Any]:
        """Let a held run begin."""
        return self._move(("held",), "running", "start")

    def pause(self) -> dict[str, Any]:
        """Hold the run before its next round (the round in progress finishes)."""
        return self._move(("running",), "paused", "pause")

    def resume(self) -> dict[str, Any]:
        """Continue a paused run."""
        return self._move(("paused",), "running", "resume")

    def stop(self) -> dict[str, Any]:
        """End the run after the round in progress commits."""
        with self._cond:
            if self.state in ("stopping", "stopped"):
                return self._status_locked()
            if self.state == "finished":
                raise ConfigError("cannot stop a run that is finished")
            self._set_locked("stopping")
            return self._status_locked()

    def submit(
        self, what: str, fn: Callable[[], dict[str, Any]], *, timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Run ``fn`` on the run loop's thread between rounds; return its result.

        Raises :class:`ConfigError` when no run loop is attached, :class:`CommandPending` when
        the loop did not reach the command within ``timeout_s`` (it still runs later).
        """
        command = _Command(what, fn)
        with self._cond:
            if not self.attached or self.state in ("stopping", "stopped", "finished"):
                raise ConfigError(f"no running federation to {what}: the run is {self.state}")
            self._commands.append(command)
            self._cond.notify_all()
        if not command.done.wait(timeout_s):
            raise CommandPending(f"{what} is queued and runs before the next round")
        if command.error is not None:
            raise command.error
        assert command.result is not None
        return command.result

    # ------------------------------------------------------------------ run-loop side

    def begin(self) -> None:
        """Called by the run loop when it starts: a finished or stopped control runs again."""
        with self._cond:
            if self.state in ("finished", "stopped"):
                self._set_locked("running")

    def between_rounds(self, round_: int) -> bool:
        """Called by the run loop before each round: run commands, hold while paused or held.

        Returns ``False`` when the run must stop.
        """
        with self._cond:
            self.attached = True
            self.round = round_
        while True:
            self._run_commands()
            with self._cond:
                if self._commands:
                    continue
                if self.state == "stopping":
                    self.parked = False
                    return False
                if self.state == "running":
                    self.parked = False
                    return True
                self.parked = True
                self._cond.wait(0.25)

    def finished(self, stopped: str | None, round_: int) -> None:
        """Called by the run loop when it ends; queued commands fail."""
        with self._cond:
            self.round = round_
            self.attached = False
            self.parked = False
            self._set_locked("stopped" if stopped == "operator_stop" else "finished")
            commands, self._commands = list(self._commands), deque()
        for command in commands:
            command.error = ConfigError(f"the run ended before {command.what} could run")
            command.done.set()

    def _run_commands(self) -> None:
        while True:
            with self._cond:
                if not self._commands:
                    return
                command = self._commands.popleft()
            try:
                command.result = command.fn()
            except Exception as exc:  # handed to the caller, the loop goes on
                command.error = exc
            command.done.set()

    def _set_locked(self, state: str) -> None:
        assert state in _STATES
        self.state = state
        self.history.append((time.time(), state))
        self._cond.notify_all()

    def _status_locked(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "round": self.round,
            "attached": self.attached,
            "parked": self.parked,
            "queued_commands": len(self._commands),
        }
