"""A pool of Ray actors that train clients; it schedules and knows nothing of the clock.

Each actor loads the frozen base model once and then serves any client: the packed token arrays of all
clients sit once in Ray's object store (read zero-copy by every actor on a node), and each job carries only
a small `TrainJob` plus a reference to the global adapter it starts from. Jobs go to the actor with the
fewest jobs outstanding; the caller decides which results it waits for and in which order it uses them.

A worker process that dies (killed, out of memory, its node lost) is replaced by a new actor built from the
same constructor arguments, so it holds the same model and data; the jobs it had not finished are submitted
again when their results are asked for. So is a job whose finished result was lost with its node: a result
over Ray's inline limit (100 KiB: the adapter of any but the tiniest model) lives in the object store of the
worker's node until the caller fetches it. Every job is a pure function of its arguments (seeded per client
and round), so a retried job gives the result the lost one would have given, and the run's numbers do not
change; only `WorkerFaults` records that it happened.

A worker may hold a share of a GPU (`gpus_per_worker`, through Ray's own resource accounting: Ray sets the
actor's CUDA_VISIBLE_DEVICES); its trainer then runs on CUDA. A cluster without that many GPUs is refused before
any worker starts, since Ray would otherwise wait for ever for a GPU to free up.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import resource
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import ray
import torch

from aggregation import ParameterGroups
from fleet.base_model import load_base_model
from fleet.cluster import check_cluster
from fleet.data import PackedTokens
from fleet.grouped import GroupedTrainer
from fleet.rng import stream
from fleet.trainer import (
    LocalTrainer,
    LoraSpec,
    TrainJob,
    TrainResult,
    TrainSettings,
    adapter_layout,
    windows,
    wrap_with_lora,
)

log = logging.getLogger(__name__)

# A job is submitted at most this many times: faults are rare, and a job whose worker dies every time (say,
# out of memory) should stop the run, not loop.
MAX_ATTEMPTS = 4
# How long attaching to a cluster may wait for it to answer (runtime.connect_timeout_s).
CONNECT_TIMEOUT_S = 20.0

# How a job is lost: its worker died, or its finished result went with the node that held it.
LOST = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)


@dataclass(frozen=True)
class WorkerFaults:
    """What worker faults a run met; neither changes a result, both say the host was not healthy."""

    jobs_retried: int  # submissions made again because the worker running them died or their result was lost
    workers_replaced: int  # dead actors replaced by new ones


@dataclass(frozen=True)
class WorkerMemory:
    """The most memory one worker has held since it started: what runtime.worker_memory_gb must cover."""

    peak_rss_mb: float  # the worker process's peak resident set (MiB)
    peak_cuda_mb: float | None  # the most CUDA memory its tensors took (torch's allocator, MiB); None on CPU


@dataclass(frozen=True)
class _Job:
    method: str
    args: tuple
    actor: int  # index of the actor it was given to
    generation: int  # how many times that actor had been replaced when it was given the job


@contextmanager
def ray_session(address: str | None, num_cpus: int, dashboard: bool = False, loopback_only: bool = True,
                connect_timeout_s: float = CONNECT_TIMEOUT_S):
    """Ray for the length of a `with` block; shut down after only if this block started it."""
    started = start_ray(address, num_cpus, dashboard, loopback_only, connect_timeout_s)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def start_ray(address: str | None, num_cpus: int, dashboard: bool = False, loopback_only: bool = True,
              connect_timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Attach to `address` (checked first: fleet.cluster) or start a local Ray; returns whether this call
    started it. A local Ray is always a new one, whatever RAY_ADDRESS or an earlier `ray start` say; it has no
    dashboard unless asked, and with `loopback_only` every server it starts listens on 127.0.0.1 only."""
    if ray.is_initialized():
        return False
    # Ray turns token authentication on for a local cluster and warns about it at every start: keep it on,
    # and keep the notice away from users.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address:
        address = check_cluster(address, connect_timeout_s)
        # A driver of a cluster on the loopback address must keep its own address there too: Ray would turn
        # it into the machine's routable one, where that cluster does not listen.
        with _node_address_is_loopback(is_loopback(address.rsplit(":", 1)[0])):
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return True
    host = "127.0.0.1" if loopback_only else "0.0.0.0"
    with _node_address_is_loopback(loopback_only):
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=dashboard,
            dashboard_host=host,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    return True


def missing_gpus(gpus_per_worker: float) -> str | None:
    """Why the Ray cluster this process is attached to cannot place one worker holding `gpus_per_worker` GPUs
    (None: it can). Ray would keep such an actor pending, silently, for as long as the run waits."""
    if gpus_per_worker <= 0:
        return None
    have = ray.cluster_resources().get("GPU", 0)
    if have >= gpus_per_worker:
        return None
    return (f"a worker needs {gpus_per_worker:g} GPU and the Ray cluster has {have:g}; set it to 0 to train on "
            "CPUs, or run where Ray sees GPUs (a local Ray counts the machine's visible CUDA devices; a cluster's "
            "nodes, those each was started with)")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


@contextmanager
def _node_address_is_loopback(on: bool):
    """Make the node Ray starts take 127.0.0.1 as its address. Ray's servers (GCS, raylet, workers, runtime
    environment agent) listen on 127.0.0.1 only when that is the node's address, and on every interface
    otherwise; and `ray.init(_node_ip_address="127.0.0.1")` is turned into the machine's routable address
    (ray._private.services.resolve_ip_for_localhost). The node takes the loopback address when Ray's cluster
    support is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, as on a laptop), read from the environment by every
    process Ray starts, and already read by this one, hence the constant set for the length of the start."""
    if not on:
        yield
        return
    from ray._private import ray_constants

    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    before_env, before = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before_env


@ray.remote
class TrainerActor:
    def __init__(
        self,
        model_path: str,
        lora: LoraSpec,
        settings: TrainSettings,
        threads: int,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        eval_windows: torch.Tensor,
        device: str = "cpu",
    ):
        # One thread per actor: results then do not depend on how many actors share a machine.
        torch.set_num_threads(threads)
        model = wrap_with_lora(load_base_model(model_path), lora, settings.seed)
        self.trainer = LocalTrainer(model, settings, adapter_layout(model, lora), device)
        self.grouped = GroupedTrainer(self.trainer)
        self.train_data, self.test_data = PackedTokens(*train), PackedTokens(*test)
        self.eval_windows = eval_windows

    def train(self, job: TrainJob, start: torch.Tensor, base_delta: torch.Tensor | None) -> TrainResult:
        return self.trainer.train(job, start, self.train_data.get(job.data_client), base_delta)

    def train_group(self, jobs: list[TrainJob], base_delta: torch.Tensor | None,
                    *starts: torch.Tensor) -> list[TrainResult]:
        """Several jobs in one pass (fleet/grouped.py); the starts come as arguments of their own, so that
        Ray hands over the tensors rather than their refs."""
        return self.grouped.train(jobs, list(starts), [self.train_data.get(j.data_client) for j in jobs], base_delta)

    def evaluate(self, adapter: torch.Tensor, base_delta: torch.Tensor | None) -> float:
        return self.trainer.evaluate(adapter, self.eval_windows, base_delta=base_delta)

    def evaluate_clients(self, adapter: torch.Tensor, groups: ParameterGroups,
                         clients: list[tuple[int, torch.Tensor | None]], n_windows: int,
                         base_delta: torch.Tensor | None) -> list[tuple[float, float]]:
        """Per client, the loss on windows of its own held-out text with its personal entries in the adapter
        (None: it has none) and with the global adapter alone."""
        s, trainer = self.trainer.settings, self.trainer
        out = []
        for data_client, personal in clients:
            rng = stream(s.seed, "client-eval", data_client)
            text = windows(self.test_data.get(data_client), rng.integers(0, 2**31, n_windows), s.seq_len + 1)
            plain = trainer.evaluate(adapter, text, base_delta=base_delta)
            own = plain
            if personal is not None:
                own = trainer.evaluate(self._with_personal(adapter, groups, personal), text, base_delta=base_delta)
            out.append((own, plain))
        return out

    def score_windows(self, adapter: torch.Tensor, groups: ParameterGroups, windows: tuple[np.ndarray, np.ndarray],
                      sets: list[tuple[int, int, torch.Tensor | None]],
                      base_delta: torch.Tensor | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per set of windows `windows[first:last]` (packed texts), the mean token loss of each window with the
        set's personal entries in the adapter (None: it has none) and with the global adapter alone."""
        packed, out = PackedTokens(*windows), []
        for first, last, personal in sets:
            texts = [packed.get(i) for i in range(first, last)]
            plain = self.trainer.score(adapter, texts, base_delta=base_delta)
            own = plain
            if personal is not None:
                own = self.trainer.score(self._with_personal(adapter, groups, personal), texts, base_delta=base_delta)
            out.append((own, plain))
        return out

    def peak_memory(self) -> WorkerMemory:
        return WorkerMemory(peak_rss_mb(), torch.cuda.max_memory_allocated() / 2**20
                            if self.trainer.device.type == "cuda" else None)

    def _with_personal(self, adapter: torch.Tensor, groups: ParameterGroups, personal: torch.Tensor) -> torch.Tensor:
        _, personal_mask, _ = groups.masks(self.trainer.layout)
        mine = adapter.clone()
        mine[personal_mask] = personal
        return mine


def peak_rss_mb() -> float:
    """This process's peak resident set in MiB: VmHWM from /proc on Linux, getrusage's maximum elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, kB elsewhere


class WorkerPool:
    """`train` and `evaluate` return ObjectRefs at once; `get` waits for the ones asked for, replacing a worker
    that died and submitting again the jobs it had not finished.

    Why not Ray's own actor restarts and task retries (`max_restarts`, `max_task_retries`)? Their retries are
    invisible to the caller, so a run could not count or report the faults it met; and Ray warns on every
    start of an actor that would restart from arguments held in the object store, as these workers' data are."""

    def __init__(
        self,
        num_workers: int,
        threads_per_worker: int,
        model_path: str,
        lora: LoraSpec,
        settings: TrainSettings,
        train_data: PackedTokens,
        test_data: PackedTokens,
        eval_windows: torch.Tensor,
        gpus_per_worker: float = 0.0,
    ):
        problem = missing_gpus(gpus_per_worker)
        if problem:
            raise ValueError(f"gpus_per_worker: {problem}")
        train_ref = ray.put((train_data.tokens, train_data.offsets))
        test_ref, eval_ref = ray.put((test_data.tokens, test_data.offsets)), ray.put(eval_windows)
        # what a replacement worker is built from; the refs keep the data in the object store for it
        self._threads, self._gpus = threads_per_worker, gpus_per_worker
        device = "cuda" if gpus_per_worker > 0 else "cpu"
        self._init_args = (model_path, lora, settings, threads_per_worker, train_ref, test_ref, eval_ref, device)
        self._actors = [self._new_actor() for _ in range(num_workers)]
        self._generation = [0] * num_workers
        self._pending: list[list[ray.ObjectRef]] = [[] for _ in self._actors]
        self._jobs: dict[ray.ObjectRef, _Job] = {}  # submitted and not yet fetched: what to submit again
        self._retried = 0

    def _new_actor(self):
        # On a cluster, spread the workers over its nodes rather than fill the driver's first (Ray's default).
        # A sweep trial's workers are placed by its placement group, which an explicit strategy would escape.
        in_group = ray.get_runtime_context().get_placement_group_id() is not None
        spread = {} if in_group else {"scheduling_strategy": "SPREAD"}
        return TrainerActor.options(num_cpus=self._threads, num_gpus=self._gpus, **spread).remote(*self._init_args)

    def __len__(self) -> int:
        return len(self._actors)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def put(self, value) -> ray.ObjectRef | None:
        return None if value is None else ray.put(value)

    def train(self, job: TrainJob, start_ref: ray.ObjectRef, base_ref: ray.ObjectRef | None) -> ray.ObjectRef:
        return self._submit("train", job, start_ref, base_ref)

    def train_group(self, jobs: list[TrainJob], start_refs: list[ray.ObjectRef],
                    base_ref: ray.ObjectRef | None) -> ray.ObjectRef:
        """One ref to the list of the jobs' results, trained together on one worker."""
        return self._submit("train_group", jobs, base_ref, *start_refs)

    def evaluate(self, adapter_ref: ray.ObjectRef, base_ref: ray.ObjectRef | None) -> ray.ObjectRef:
        return self._submit("evaluate", adapter_ref, base_ref)

    def evaluate_clients(self, adapter_ref: ray.ObjectRef, groups: ParameterGroups,
                         clients: list[tuple[int, torch.Tensor | None]], n_windows: int,
                         base_ref: ray.ObjectRef | None) -> ray.ObjectRef:
        return self._submit("evaluate_clients", adapter_ref, groups, clients, n_windows, base_ref)

    def score_windows(self, adapter_ref: ray.ObjectRef, groups: ParameterGroups, windows_ref: ray.ObjectRef,
                      sets: list[tuple[int, int, torch.Tensor | None]],
                      base_ref: ray.ObjectRef | None) -> list[ray.ObjectRef]:
        """`windows_ref`: packed texts (tokens, offsets) put once; the sets are spread over the actors, one
        call each, and the refs come back in order."""
        parts = [p for p in np.array_split(np.arange(len(sets)), len(self._actors)) if len(p)]
        return [self._submit("score_windows", adapter_ref, groups, windows_ref, [sets[i] for i in p], base_ref)
                for p in parts]

    def _submit(self, method: str, *args) -> ray.ObjectRef:
        return self._submit_to(self._least_loaded(), method, *args)

    def _submit_to(self, i: int, method: str, *args) -> ray.ObjectRef:
        ref = getattr(self._actors[i], method).remote(*args)
        self._pending[i].append(ref)
        self._jobs[ref] = _Job(method, args, i, self._generation[i])
        return ref

    def get(self, refs: list[ray.ObjectRef]) -> list:
        """The results of `refs`, in order. A job whose worker died (the worker is replaced) or whose result
        was lost is submitted again, up to MAX_ATTEMPTS times in all."""
        try:
            results = ray.get(refs)
        except LOST:
            results = [self._result(ref) for ref in refs]
        for ref in refs:
            self._jobs.pop(ref, None)
        return results

    def _result(self, ref: ray.ObjectRef):
        job, current = self._jobs.get(ref), ref
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return ray.get(current)
            except LOST as err:
                if job is None or attempt == MAX_ATTEMPTS:
                    raise
                self._retried += 1
                died = isinstance(err, ray.exceptions.RayActorError)
                log.warning("%s during a %s job (%s); submitting it again (attempt %d of %d)",
                            "a worker died" if died else "a result was lost", job.method, type(err).__name__,
                            attempt + 1, MAX_ATTEMPTS)
                if died:
                    self._replace(job)
                # To the same place, now a new worker if the old one died: when a node is lost, the least loaded
                # worker may be another that died with it and is not yet known dead, and each such try would use
                # an attempt. A lost result says nothing of its worker: a dead one is found out, and replaced,
                # at the next attempt.
                current = self._submit_to(job.actor, job.method, *job.args)
                job = self._jobs.pop(current)  # the original ref stands for it

    def _replace(self, job: _Job) -> None:
        """Replace the dead worker that had `job`, unless another of its jobs already did."""
        if self._generation[job.actor] == job.generation:
            self._renew(job.actor)
            self._ready(job.actor)  # loads its model before jobs queue on it

    def _renew(self, i: int) -> None:
        ray.kill(self._actors[i])
        self._actors[i], self._pending[i] = self._new_actor(), []
        self._generation[i] += 1

    def _ready(self, i: int) -> None:
        """Wait until worker i has loaded its model. One whose process dies while it starts (killed, out of
        memory) is started again, up to MAX_ATTEMPTS times; one whose start-up code failed is not."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                ray.get(self._actors[i].__ray_ready__.remote())
                return
            except ray.exceptions.RayActorError as err:
                if getattr(err, "actor_init_failed", False) or attempt == MAX_ATTEMPTS:
                    raise
                log.warning("a worker died while starting (%s); starting another (attempt %d of %d)",
                            type(err).__name__, attempt + 1, MAX_ATTEMPTS)
                self._renew(i)

    def wait_ready(self) -> None:
        """Block until every actor has loaded its model (so start-up is not billed to the first round)."""
        for i in range(len(self._actors)):
            self._ready(i)

    def peak_memory(self) -> list[WorkerMemory]:
        """Each worker's peak memory so far, in worker order (a replaced worker's counts from its start)."""
        return ray.get([actor.peak_memory.remote() for actor in self._actors])

    def faults(self) -> WorkerFaults:
        """The worker faults met so far."""
        replaced = sum(self._generation)
        if self._retried or replaced:
            log.warning("worker faults: %d jobs submitted again, %d workers replaced", self._retried, replaced)
        return WorkerFaults(jobs_retried=self._retried, workers_replaced=replaced)

    def shutdown(self) -> None:
        for actor in self._actors:
            ray.kill(actor)
        self._actors, self._pending, self._jobs = [], [], {}

    def _least_loaded(self) -> int:
        for pending in self._pending:
            if pending:
                _, pending[:] = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
        return min(range(len(self._actors)), key=lambda i: len(self._pending[i]))
