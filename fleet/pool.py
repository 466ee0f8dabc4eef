"""A pool of Ray actors that train clients; it schedules and knows nothing of the clock.

Each actor loads the frozen base model once and then serves any client: the packed token arrays of all
clients sit once in Ray's object store (read zero-copy by every actor on a node), and each job carries only
a small `TrainJob` plus a reference to the global adapter it starts from. Jobs go to the actor with the
fewest jobs outstanding; the caller decides which results it waits for and in which order it uses them.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import ray
import torch

from fleet.base_model import load_base_model
from fleet.data import PackedTokens
from fleet.trainer import LocalTrainer, LoraSpec, TrainJob, TrainResult, TrainSettings, wrap_with_lora


@contextmanager
def ray_session(address: str | None, num_cpus: int):
    """Ray for the length of a `with` block; shut down after only if this block started it."""
    started = start_ray(address, num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def start_ray(address: str | None, num_cpus: int) -> bool:
    """Attach to `address` or start a local Ray; returns whether this call started it.
    Local Ray gets no dashboard and listens on loopback only."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
    return True


@ray.remote
class TrainerActor:
    def __init__(
        self,
        model_path: str,
        lora: LoraSpec,
        settings: TrainSettings,
        threads: int,
        tokens: np.ndarray,
        offsets: np.ndarray,
        eval_windows: torch.Tensor,
    ):
        # One thread per actor: results then do not depend on how many actors share a machine.
        torch.set_num_threads(threads)
        model = wrap_with_lora(load_base_model(model_path), lora, settings.seed)
        self.trainer = LocalTrainer(model, settings)
        self.data = PackedTokens(tokens, offsets)
        self.eval_windows = eval_windows

    def train(self, job: TrainJob, adapter: torch.Tensor) -> TrainResult:
        return self.trainer.train(job, adapter, self.data.get(job.data_client))

    def evaluate(self, adapter: torch.Tensor) -> float:
        return self.trainer.evaluate(adapter, self.eval_windows)


class WorkerPool:
    """`train` and `evaluate` return ObjectRefs at once; `get` waits for the ones asked for."""

    def __init__(
        self,
        num_workers: int,
        threads_per_worker: int,
        model_path: str,
        lora: LoraSpec,
        settings: TrainSettings,
        train_data: PackedTokens,
        eval_windows: torch.Tensor,
    ):
        tokens_ref, offsets_ref = ray.put(train_data.tokens), ray.put(train_data.offsets)
        eval_ref = ray.put(eval_windows)
        self._actors = [
            TrainerActor.options(num_cpus=threads_per_worker).remote(
                model_path, lora, settings, threads_per_worker, tokens_ref, offsets_ref, eval_ref
            )
            for _ in range(num_workers)
        ]
        self._pending: list[list[ray.ObjectRef]] = [[] for _ in self._actors]

    def __len__(self) -> int:
        return len(self._actors)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def put_adapter(self, adapter: torch.Tensor) -> ray.ObjectRef:
        return ray.put(adapter)

    def train(self, job: TrainJob, adapter_ref: ray.ObjectRef) -> ray.ObjectRef:
        return self._submit("train", job, adapter_ref)

    def evaluate(self, adapter_ref: ray.ObjectRef) -> ray.ObjectRef:
        return self._submit("evaluate", adapter_ref)

    def _submit(self, method: str, *args) -> ray.ObjectRef:
        i = self._least_loaded()
        ref = getattr(self._actors[i], method).remote(*args)
        self._pending[i].append(ref)
        return ref

    @staticmethod
    def get(refs):
        return ray.get(refs)

    def wait_ready(self) -> None:
        """Block until every actor has loaded its model (so start-up is not billed to the first round)."""
        ray.get([a.__ray_ready__.remote() for a in self._actors])

    def shutdown(self) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors, self._pending = [], []

    def _least_loaded(self) -> int:
        for pending in self._pending:
            if pending:
                _, pending[:] = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
        return min(range(len(self._actors)), key=lambda i: len(self._pending[i]))
