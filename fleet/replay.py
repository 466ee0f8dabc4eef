"""The journal of a run's server steps, and the replay of a checkpointed run up to its checkpoint.

The clock never depends on training results, but each server step decides a few things from them: which
updates the screen rejected (their sessions' outcomes), the losses that loss-based selection reads, whether
a version was published, and what the strategy offers for download next (FLoRA's stack grows with the cohort
that made it). The journal records those decisions, one `Step` per server step, and a checkpoint carries it.

SimPy processes cannot be saved, and need not be: every random draw comes from a keyed stream, so a resumed
run replays the clock from time 0 with nothing trained, taking each step's decisions from the journal, until
the journal runs out: that is the checkpoint. There `go_live` checks that the replayed clock equals the saved
one and hands back what training had built, and the run goes on training.

Checkpoint format (what the sink saves; unchanged, so that older checkpoints still resume), in this order:
"journal" (the steps, a JSON list of objects with keys rejected, losses, recorded, published, download), the
clock's state ("now", "version", "charge_wh", "last_loss", "last_duration_s"), then what training built
("adapter", "strategy", "clients", "cohorts", "probes").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Step:
    """What one server step decided from training results."""

    rejected: list  # [index among the step's arrivals (sorted by device), the outcome its session got]
    losses: list  # [device, the first loss of its local training], for loss-based selection
    recorded: bool  # did the step record a row (an asynchronous buffer rejected whole does not, yet)
    published: bool  # did it publish a new global version
    download: int  # values the strategy offers for download after the step

    def as_json(self) -> dict:
        return {"rejected": self.rejected, "losses": self.losses, "recorded": self.recorded,
                "published": self.published, "download": self.download}


class Journal:
    """The steps of this run so far; with `resume` (a checkpoint's state), first the replay up to it."""

    def __init__(self, resume: dict | None = None):
        """`resume` is taken over (the caller's dict is emptied): its tensors may be views of the checkpoint
        file, mapped into memory, and are let go once the run is live, so that the file's pages and its disk
        space (once a newer checkpoint replaces it) are not held for the rest of the run."""
        self._steps: list[Step] = []
        self._saved: dict | None = None  # the checkpoint being replayed up to; None once live
        self._download: int | None = None  # what the last replayed step says the strategy offers
        if resume is not None:
            recorded = [Step(**step) for step in json.loads(resume["journal"])]
            if not recorded:
                raise ValueError("a checkpoint with no server step to go on from")
            self._saved = {**resume, "journal": recorded}
            resume.clear()

    @property
    def replaying(self) -> bool:
        """Is the clock being replayed up to the checkpoint (nothing is trained, nothing recorded)?"""
        return self._saved is not None

    def note(self, step: Step) -> None:
        """A live server step."""
        self._steps.append(step)

    def next_step(self) -> Step:
        """The recorded step the replayed server has reached; it becomes this run's own."""
        step = self._saved["journal"][len(self._steps)]
        self._steps.append(step)
        self._download = step.download
        return step

    @property
    def at_checkpoint(self) -> bool:
        """Has the replay taken the last recorded step?"""
        return len(self._steps) == len(self._saved["journal"])

    def download_values(self, strategy) -> int:
        """Values a client downloads: while the clock is replayed the strategy is not stepped, so after the
        first replayed step the journal says what it offered."""
        return strategy.download_values() if self._download is None else self._download

    def checkpoint(self, clock: dict, built: dict) -> dict:
        """The state a sink saves: the journal, the clock's state (checked on resume), what training built."""
        return {"journal": json.dumps([step.as_json() for step in self._steps]), **clock, **built}

    def go_live(self, clock: dict) -> dict:
        """End the replay at the checkpoint: check the replayed clock's state against the saved one; returns
        the saved state, for the run to load what training had built."""
        saved, self._saved, self._download = self._saved, None, None
        differ = [k for k, v in clock.items()
                  if not np.array_equal(v, saved[k], equal_nan=isinstance(v, np.ndarray))]
        if differ:
            raise RuntimeError(f"the replayed run differs from its checkpoint in {', '.join(differ)}: the scenario "
                               f"or the emulator changed since the checkpoint was written")
        return saved
