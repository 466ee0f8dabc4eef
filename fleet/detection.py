"""Fault detection of each evaluated version, for cell-site scenarios: an emulator probe that scores every
evaluated site's held-out log windows on the workers and measures AUROC against their labels.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch

from aggregation import ParameterGroups
from fleet.auroc import auroc
from fleet.clients import ClientSide
from fleet.data import DetectionWindows, FederatedData
from fleet.devices import Fleet
from fleet.pool import WorkerPool
from fleet.trainer import TrainJob

ALONE_ROUND = -1  # the random streams of a site training alone after the run: no session has this round


class DetectionProbe:
    """Fault detection of each evaluated version (an emulator probe): every evaluated site's windows scored on
    the workers with the global adapter and with the adapter of the site's device (its lowest-id device: the
    global adapter with the device's personal part), AUROC per site against the window labels. The per-site
    AUROCs of the first version (the base model) and of the last are kept for the final comparison."""

    def __init__(self, pool: WorkerPool, detection: DetectionWindows, fleet: Fleet, clients: ClientSide,
                 groups: ParameterGroups):
        self.pool, self.detection, self.clients, self.groups = pool, detection, clients, groups
        self.windows_ref = pool.put((detection.windows.tokens, detection.windows.offsets))
        first: dict[int, int] = {}
        for device, client in enumerate(fleet.data_client.tolist()):
            first.setdefault(client, device)
        # -1: no device has the site's data; it is scored with the initial personal part
        self.devices = np.array([first.get(int(c), -1) for c in detection.clients])
        self.sites = list(range(len(self.devices)))
        self.base: np.ndarray | None = None  # per-site AUROC of the first version
        self.last: tuple[np.ndarray, np.ndarray] | None = None  # of the last: own adapter, global adapter

    def state_dict(self) -> dict:
        return {"base": self.base, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.base, self.last = state["base"], None if state["last"] is None else tuple(state["last"])

    def __call__(self, adapter_ref, base_ref) -> Callable[[], dict]:
        keeps = self.clients.keeps_personal
        personal = [self.clients.personal_part(int(d)) if keeps else None for d in self.devices]
        refs = self.score(adapter_ref, self.sites, personal, base_ref)

        def finish() -> dict:
            own, plain = self.aurocs(refs, self.sites)
            self.base = plain if self.base is None else self.base
            self.last = own, plain
            return {"detection_auroc": float(plain.mean()), "detection_auroc_personal": float(own.mean())}

        return finish

    def score(self, adapter_ref, sites: list[int], personal: list, base_ref) -> list:
        """Refs to the window scores of `sites` (indices into the evaluated sites), each with its personal part."""
        o = self.detection.offsets
        return self.pool.score_windows(adapter_ref, self.groups, self.windows_ref,
                                       [(int(o[j]), int(o[j + 1]), p) for j, p in zip(sites, personal)], base_ref)

    def aurocs(self, refs: list, sites: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-site AUROC with the own adapter and with the global adapter alone."""
        pairs = [pair for part in self.pool.get(refs) for pair in part]
        o, faulty = self.detection.offsets, self.detection.faulty
        labels = [faulty[o[j]: o[j + 1]] for j in sites]
        return tuple(np.array([auroc(pair[k], y) for pair, y in zip(pairs, labels)]) for k in (0, 1))

    def alone(self, starts: list[torch.Tensor], steps: int, base_ref=None) -> np.ndarray:
        """Per-site AUROC after each site trains alone on its own training text for `steps` local steps from
        starts[j]: the same batches whatever the start, the strategy's frozen entries held, no proximal term."""
        jobs = [TrainJob(client=int(c), data_client=int(c), round=ALONE_ROUND, base_version=0, steps=steps,
                         groups=self.groups) for c in self.detection.clients]
        results = self.pool.get([self.pool.train(job, self.pool.put(start), base_ref)
                                 for job, start in zip(jobs, starts)])
        refs = [ref for j, (start, r) in enumerate(zip(starts, results))
                for ref in self.score(self.pool.put(start + r.delta), [j], [None], base_ref)]
        return self.aurocs(refs, self.sites)[1]

    def sites_table(self, data: FederatedData, steps: int, local: np.ndarray, tuned: np.ndarray) -> pd.DataFrame:
        d = self.detection
        own, plain = self.last
        return pd.DataFrame({
            "site": [data.client_ids[c] for c in d.clients],
            "data_client": d.clients,
            "device": self.devices,
            "windows": np.diff(d.offsets),
            "fault_windows": np.add.reduceat(d.faulty, d.offsets[:-1]).astype(int),
            "local_steps": steps,
            "auroc_base": self.base,
            "auroc_local": local,
            "auroc_global": plain,
            "auroc_personal": own,
            "auroc_tuned": tuned,
        })
