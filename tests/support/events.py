"""An events hook that records what the services report."""

from __future__ import annotations

from collections import Counter
from typing import Any

from schema.events import Events

#: Every event of the hook, by method name.
EVENT_NAMES = tuple(name for name in vars(Events) if not name.startswith("_"))


class RecordingEvents(Events):
    """``events.seen["guard_refused"]`` is how many refusals were reported;
    ``events.calls`` lists every report with its arguments, in order."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []


def _recorder(name: str) -> Any:
    def record(self: RecordingEvents, *args: Any) -> None:
        self.seen[name] += 1
        self.calls.append((name, args))

    record.__name__ = name
    return record


for _name in EVENT_NAMES:
    setattr(RecordingEvents, _name, _recorder(_name))
