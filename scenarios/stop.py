"""Stopping a run on request: SIGINT (Ctrl-C) or SIGTERM (a scheduler, `kill`) asks the run to stop at the
end of the server step at work, where it checkpoints; a second signal stops it at once, from the checkpoint
before. Either way the run folder goes on with `fedfleet run --resume RUN_DIR`.

Ray's own SIGTERM handler (installed by ray.init) exits at once, so these handlers are installed after Ray
has started, and Ray's are put back before it shuts down.
"""

from __future__ import annotations

import contextlib
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    def __init__(self):
        self.signum: int | None = None  # the first signal received

    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @contextlib.contextmanager
    def installed(self):
        before = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nfedfleet: {self.name}: stopping at the end of this round, with a checkpoint "
              "(a second signal stops at once)", file=sys.stderr, flush=True)
