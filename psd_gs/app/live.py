"""A run in a thread of its own, watched by a page: the page's handler polls it and never waits on a step.

Gradio runs a generator handler one ``next()`` at a time in a worker thread, and a cancelled request (a
client's cancel, a closed tab) is answered only when the current ``next()`` returns. When the handler
iterated ``generate()`` itself, one ``next()`` lasted as long as the step, the model load or the export
behind it (minutes for a cold pose grid at 512 px), and the run waited for the page between steps. With
``LiveRun`` the work (any iterator: model loading, then ``generate``'s events) runs on the server's run
thread and queues its events; the handler takes whatever has arrived every ``poll`` (at most ``timeout`` s), so
every phase of a run answers a cancel within one poll, and the page costs the run only the updates it
chooses to send.

    live = LiveRun(lambda: work(...), runner)   # runner: one ThreadPoolExecutor(1) per server
    while True:
        events, ended = live.poll(0.5)
        ...                       # coalesce events into one page update
        if ended: break
    if live.error: ...            # what the work raised, re-raised or shown by the caller
"""

from __future__ import annotations

import queue
from concurrent.futures import Executor, Future
from typing import Callable, Iterable, List, Optional, Tuple

_END = object()


class LiveRun:
    """Iterates ``work()`` on ``runner``; its events wait in a queue for ``poll``.

    runner: the server's one run thread (``ThreadPoolExecutor(max_workers=1)``): runs never overlap, so a
    cancelled run that is still writing its outputs finishes before the next one starts, and every run
    allocates from the same thread's memory arena (a thread per run let the server's memory creep up).
    """

    def __init__(self, work: Callable[[], Iterable[object]], runner: Executor):
        self._events: "queue.SimpleQueue[object]" = queue.SimpleQueue()
        self.error: Optional[BaseException] = None
        self.ended = False
        self._work = work
        self.future: Future = runner.submit(self._main)

    def _main(self) -> None:
        try:
            for event in self._work():
                self._events.put(event)
        except BaseException as err:  # handed to the page's thread, which knows what to tell the user
            self.error = err
        finally:
            self._events.put(_END)

    def poll(self, timeout: float) -> Tuple[List[object], bool]:
        """(the events that arrived since the last poll, in order; whether the work has ended). Waits up to
        ``timeout`` seconds for the first event, then takes what is queued without waiting."""
        events: List[object] = []
        try:
            item = self._events.get(timeout=timeout)
            while True:
                if item is _END:
                    self.ended = True
                    break
                events.append(item)
                item = self._events.get_nowait()
        except queue.Empty:
            pass
        return events, self.ended
