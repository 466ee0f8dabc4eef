"""A real Ray cluster started with `ray start`: a head and a second node, each its own processes on this
machine, token authentication on, every Ray server on 127.0.0.1 only. `fedfleet run` and `fedfleet sweep`
attach to it with --address, and:

- record what the same commands record on a local Ray (host wall-clock columns aside);
- use both nodes: a run's training actors sit on both (WorkerPool spreads them; either node could hold them
  all, so Ray's default placement, which fills the driver's node first, would fail this), and so do the
  sweep's trials (a node cannot hold two);
- every TCP socket of every process of the cluster, and of the commands attached to it, is on 127.0.0.1:
  each listening socket, and both ends of each connection, sampled from /proc all along;
- a driver with another token is refused at once: a non-zero exit status, the token named, no traceback
  and no run folder.

How the nodes stay on the loopback address (Ray 2.60). Ray turns a node address of 127.0.0.1 into the
machine's routable one (ray._private.services.resolve_ip_for_localhost), and its GCS and raylets listen on
every interface of a node whose address is not 127.0.0.1. With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 in the
environment (what Ray does on a laptop) the address stays 127.0.0.1 and every server listens there only:
`ray start --head` needs nothing more. `ray start --address=...` then refuses to add a node ("Multi-node Ray
clusters are not supported on Windows and OSX"), and Ray would still send it to the routable address; so
the second node is `ray start` run in a Python process that first makes that resolution keep 127.0.0.1 and
turns the refusal off (SECOND_NODE), while the processes it starts (raylet, agents, workers) read the
variable from the environment as the head's do.

The drivers (`fedfleet run`, `fedfleet sweep`) get the token but not that variable: fedfleet keeps its own
address on 127.0.0.1 by itself when the cluster's is (fleet.pool.start_ray).

The cluster's processes are those whose environment holds this module's tag (`ray start` hands its
environment to what it starts), and their descendants: Ray's workers and agents rename themselves
(setproctitle), which blanks what /proc/PID/environ shows. The cluster is stopped by those process ids,
never with `ray stop` (which would stop every Ray on the machine). Ray's files go to a private temporary
folder, so that no other Ray on this machine finds this cluster, nor this cluster another.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from tests.fleet.test_worker_faults import records

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")  # the `ray` command of this environment
TAG = "FEDFLEET_CLUSTER_TAG"
LOOPBACK = "127.0.0.1"
KEEP_ON_LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Either node can hold a run's RUN_WORKERS actors (so only spreading puts them on both), and neither can hold
# two trials of TRIAL_WORKERS actors plus their drivers (so the trials run on both).
NODE_CPUS = 3
RUN_WORKERS = 2
TRIAL_WORKERS = 1
STRATEGIES = ("fedavg", "fedprox")
# SIGTERM first; what is still there after this long is killed.
STOP_GRACE_S = 5.0

# `ray start` for a node that joins a cluster on 127.0.0.1 (see the module's docstring).
SECOND_NODE = textwrap.dedent("""
    import ray._private.services as services
    from ray._private import ray_constants
    from ray.scripts.scripts import main

    services.resolve_ip_for_localhost = lambda host: host
    ray_constants.ENABLE_RAY_CLUSTER = True
    main()
""")

# The cluster's nodes and actors, asked by a driver of its own (ray._private.state: the GCS's actor table, which
# keeps the actors of finished jobs and their nodes; the state API would need the dashboard). Waits for
# argv[2] nodes first.
PROBE = textwrap.dedent("""
    import json, sys, time
    import ray

    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    alive = lambda: [n for n in ray.nodes() if n["Alive"]]
    deadline = time.monotonic() + 60
    while len(alive()) < int(sys.argv[2]) and time.monotonic() < deadline:
        time.sleep(0.5)
    nodes = {n["NodeID"]: {"address": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU", 0),
                           "head": "node:__internal_head__" in n["Resources"]} for n in alive()}
    actors = [{"id": a["ActorID"], "class": a["ActorClassName"], "node": a["Address"]["NodeID"]}
              for a in ray._private.state.actors().values()]
    print(json.dumps({"nodes": nodes, "actors": actors}))
""")


# --- processes and their sockets, from /proc -----------------------------------------------------------------

def process_row(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19]), fields[0]


def process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, state) of every process."""
    rows = {int(entry): process_row(int(entry)) for entry in os.listdir("/proc") if entry.isdigit()}
    return {pid: row for pid, row in rows.items() if row is not None}


def tagged(pid: int, tag: str) -> bool:
    try:
        return f"{TAG}={tag}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone meanwhile, or not ours
        return False


def tag_processes(tag: str) -> dict[int, int]:
    """pid -> start time of the live processes whose environment holds `tag`, and of their descendants."""
    table = {pid: row for pid, row in process_table().items() if row[2] != "Z"}  # a zombie is gone but for its id
    found = {pid for pid in table if pid != os.getpid() and tagged(pid, tag)}
    while True:
        children = {pid for pid, (parent, _, _) in table.items() if parent in found} - found
        if not children:
            return {pid: table[pid][1] for pid in found}
        found |= children


def alive(pid: int, start: int) -> bool:
    """Whether the process found with this start time is still there (not a zombie, not another one)."""
    row = process_row(pid)
    return row is not None and row[1] == start and row[2] != "Z"


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160].strip()
    except OSError:  # gone meanwhile
        return ""


def stop_processes(tag: str) -> dict[int, str]:
    """SIGTERM to the tag's processes, SIGKILL to those left after STOP_GRACE_S; what is still there after
    that (pid -> command line). Signals go only to the ids found (and each only while it is the process found:
    same start time), looked for again all along, since a dying raylet may still start a worker."""
    found: dict[int, int] = {}
    deadline, killing = time.monotonic() + STOP_GRACE_S, False
    while True:
        new = {pid: start for pid, start in tag_processes(tag).items() if found.get(pid) != start}
        found.update(new)
        for pid, start in (found if killing else new).items():
            if alive(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL if killing else signal.SIGTERM)
                except ProcessLookupError:
                    pass
        left = {pid: start for pid, start in found.items() if alive(pid, start)}
        if not left and not tag_processes(tag):
            return {}
        if time.monotonic() > deadline:
            if killing:
                return {pid: process_name(pid) for pid in left}
            killing, deadline = True, time.monotonic() + STOP_GRACE_S
        time.sleep(0.2)


def socket_table() -> dict[int, tuple[str, tuple[str, int], tuple[str, int]]]:
    """inode -> (TCP state, local (address, port), remote (address, port)) of every TCP socket."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:  # no IPv6 here
            continue
        for line in lines:
            fields = line.split()
            table[int(fields[9])] = (fields[3], endpoint(fields[1]), endpoint(fields[2]))
    return table


def endpoint(text: str) -> tuple[str, int]:
    """'0100007F:1F90' (/proc/net/tcp: 32-bit words in host order) -> ('127.0.0.1', 8080); an IPv4 address
    mapped into IPv6 (::ffff:127.0.0.1) comes out as the IPv4 one."""
    address, port = text.split(":")
    raw = bytes.fromhex(address)
    ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


# TCP states in /proc/net/tcp: a socket bound but neither listening nor connected is CLOSED, with no remote end.
LISTEN, CLOSED = "0A", "07"


@dataclass
class Seen:
    name: str
    listening: set[tuple[str, int]] = field(default_factory=set)
    connections: set[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=set)


class SocketWatch:
    """The TCP sockets of the tag's processes, sampled every `every_s` seconds in a thread: what each process
    (pid, start time) was seen listening on and connected to."""

    def __init__(self, tag: str, every_s: float = 0.5):
        self.tag, self.every_s = tag, every_s
        self.seen: dict[tuple[int, int], Seen] = {}
        self.errors: list[str] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> "SocketWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sample()
            except Exception as err:  # reported by the test that reads what was seen
                self.errors.append(repr(err))

    def sample(self) -> None:
        with self._lock:
            processes = tag_processes(self.tag)
            inodes = {pid: socket_inodes(pid) for pid in processes}
            sockets = socket_table()
            for pid, start in processes.items():
                seen = self.seen.setdefault((pid, start), Seen("?"))
                seen.name = process_name(pid) or seen.name  # a Ray worker takes the name of what it runs
                for inode in inodes[pid] & sockets.keys():
                    state, local, remote = sockets[inode]
                    if state == LISTEN:
                        seen.listening.add(local)
                    elif state != CLOSED:
                        seen.connections.add((local, remote))

    def snapshot(self) -> dict[tuple[int, int], Seen]:
        with self._lock:
            return {key: Seen(s.name, set(s.listening), set(s.connections)) for key, s in self.seen.items()}


# --- the cluster ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def without_ray_settings(env: dict[str, str]) -> dict[str, str]:
    """`env` without the variables that would point Ray at another cluster, token or folder."""
    names = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_TMPDIR", KEEP_ON_LOOPBACK)
    return {k: v for k, v in env.items() if k not in names}


@dataclass
class Cluster:
    address: str
    tag: str
    env: dict[str, str]  # of the nodes and of the test's own probes
    watch: SocketWatch
    nodes: dict[str, dict] = field(default_factory=dict)  # node id -> address, cpus, head
    actors: dict[str, dict] = field(default_factory=dict)  # actor id -> class, node: all the probes have seen
    attached: list[int] = field(default_factory=list)  # pids of the fedfleet commands that ran on the cluster

    def driver_env(self) -> dict[str, str]:
        """A driver's environment: the token, not the variable that keeps the nodes on 127.0.0.1."""
        env = dict(self.env)
        env.pop(KEEP_ON_LOOPBACK)
        return env

    def fedfleet(self, *args: str, env: dict[str, str] | None = None, timeout: float = 400,
                 attached: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.Popen([sys.executable, "-m", "scenarios.cli", *args], cwd=ROOT, text=True,
                                env=env or self.driver_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if attached:
            self.attached.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def probe(self, nodes: int = 2) -> list[dict]:
        """Ask the cluster for its live nodes and its actors; the actors not seen by an earlier probe."""
        done = subprocess.run([sys.executable, "-c", PROBE, self.address, str(nodes)], cwd=ROOT, text=True,
                              env=self.env, capture_output=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        state = json.loads(done.stdout.strip().splitlines()[-1])
        self.nodes = state["nodes"]
        new = [a for a in state["actors"] if a["id"] not in self.actors]
        self.actors.update({a["id"]: a for a in state["actors"]})
        return new


def start_node(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, cwd=ROOT, env=env, text=True, capture_output=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(args[:3])}: {done.stdout[-2000:]}{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tag = uuid.uuid4().hex
    # Short: Ray's socket paths live under it.
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    token = tmp_path_factory.mktemp("token") / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**without_ray_settings(os.environ), "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), KEEP_ON_LOOPBACK: "0", TAG: tag}
    port = free_port()
    address = f"{LOOPBACK}:{port}"
    watch = SocketWatch(tag).start()
    try:
        start_node([str(RAY), "start", "--head", f"--port={port}", f"--node-ip-address={LOOPBACK}",
                    f"--num-cpus={NODE_CPUS}", "--include-dashboard=false", "--disable-usage-stats"], env)
        start_node([sys.executable, "-c", SECOND_NODE, "start", f"--address={address}",
                    f"--node-ip-address={LOOPBACK}", f"--num-cpus={NODE_CPUS}", "--disable-usage-stats"], env)
        running = Cluster(address, tag, env, watch)
        running.probe(nodes=2)
        yield running
    finally:
        watch.stop()
        left = stop_processes(tag)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        assert not left, f"processes of the cluster outlived it: {left}"


# --- the commands --------------------------------------------------------------------------------------------

def small(data: Path) -> list[str]:
    """quickstart cut as `--smoke` cuts it (scenarios/smoke.py), but for its one worker, over a few clients'
    short text (conftest.tiny_jsonl), without a report. `--smoke` itself sets runtime.workers to 1 whatever
    --set says, and a run of one actor uses one node."""
    from scenarios.loader import load_scenario
    from scenarios.smoke import smoke_overrides

    cut = [o for o in smoke_overrides(load_scenario("quickstart")) if not o.startswith("runtime.workers=")]
    return [*cut, "data.source=jsonl", f"data.path={data}", "output.report=false"]


def flags(flag: str, overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in (flag, item)]


def run_args(data: Path, workers: int, *extra: str) -> list[str]:
    return ["run", "quickstart", "--quiet", *flags("--set", [*small(data), f"runtime.workers={workers}", *extra])]


@dataclass
class LocalRuns:
    """The reference runs on local Rays of their own, all started at once (in the background while the
    cluster works), each waited for when asked."""

    procs: dict[str, tuple[subprocess.Popen, Path]]
    tag: str

    def folder(self, name: str) -> Path:
        proc, out = self.procs[name]
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"local run {name}: {err[-3000:]}"
        return out


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, tiny_jsonl):
    """The run of test_a_run... and one run per trial of test_a_sweep..., each on its own local Ray."""
    base = tmp_path_factory.mktemp("local")
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    tag = f"local-{uuid.uuid4().hex}"
    env = {**without_ray_settings(os.environ), "RAY_TMPDIR": ray_tmp, TAG: tag}
    commands = {"run": run_args(tiny_jsonl, RUN_WORKERS),
                **{s: run_args(tiny_jsonl, TRIAL_WORKERS, f"strategy.name={s}") for s in STRATEGIES}}
    procs = {}
    for name, args in commands.items():
        out = base / name
        procs[name] = (subprocess.Popen([sys.executable, "-m", "scenarios.cli", *args, "--out", str(out)], cwd=ROOT,
                                        env=env, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
    yield LocalRuns(procs, tag)
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stop_processes(tag)  # nothing, unless a run above failed and left its Ray
    shutil.rmtree(ray_tmp, ignore_errors=True)


def assert_same_records(run: Path, expected: Path) -> None:
    for got, want in zip(records(run), records(expected)):
        assert len(want) > 0
        pd.testing.assert_frame_equal(got, want)
    final = [json.loads((folder / "summary.json").read_text())["final_eval_loss"] for folder in (run, expected)]
    assert final[0] == final[1]


# --- the tests -----------------------------------------------------------------------------------------------

def test_the_cluster_is_two_nodes_on_the_loopback_address(cluster):
    assert len(cluster.nodes) == 2
    assert sorted(n["head"] for n in cluster.nodes.values()) == [False, True]
    for node in cluster.nodes.values():
        assert node["address"] == LOOPBACK
        assert node["cpus"] == NODE_CPUS


def test_a_run_on_the_cluster_records_what_a_local_run_records_and_trains_on_both_nodes(cluster, local_runs,
                                                                                          tiny_jsonl, tmp_path):
    out = tmp_path / "run"
    done = cluster.fedfleet(*run_args(tiny_jsonl, RUN_WORKERS), "--out", str(out), "--address", cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]

    workers = [a for a in cluster.probe() if a["class"] == "TrainerActor"]
    assert len(workers) == RUN_WORKERS
    assert {a["node"] for a in workers} == set(cluster.nodes), "the run's training actors sat on one node"
    assert json.loads((out / "summary.json").read_text())["workers_replaced"] == 0
    assert_same_records(out, local_runs.folder("run"))


def test_a_sweep_on_the_cluster_runs_its_trials_on_both_nodes_as_local_runs(cluster, local_runs, tiny_jsonl,
                                                                          tmp_path):
    out = tmp_path / "sweep"
    fixed = [*small(tiny_jsonl), f"runtime.workers={TRIAL_WORKERS}"]
    done = cluster.fedfleet("sweep", "quickstart", "--quiet", "--set", f"strategy.name={','.join(STRATEGIES)}",
                            *flags("--fix", fixed), "--out", str(out), "--address", cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]

    table = pd.read_parquet(out / "sweep.parquet")
    assert list(table["strategy.name"]) == list(STRATEGIES)
    assert list(table["status"]) == ["ok"] * len(STRATEGIES), table["error"].tolist()
    assert set(table["node"]) == set(cluster.nodes), "the trials ran on one node"
    workers = [a for a in cluster.probe() if a["class"] == "TrainerActor"]
    assert len(workers) == TRIAL_WORKERS * len(STRATEGIES)
    assert {a["node"] for a in workers} == set(cluster.nodes)
    for strategy, run in zip(table["strategy.name"], table["run"]):
        assert_same_records(out / run, local_runs.folder(strategy))


def test_a_driver_with_another_token_is_refused_at_once(cluster, tiny_jsonl, tmp_path):
    out = tmp_path / "refused"
    env = cluster.driver_env()
    env.pop("RAY_AUTH_TOKEN_PATH")
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    started = time.monotonic()
    done = cluster.fedfleet(*run_args(tiny_jsonl, RUN_WORKERS), "--out", str(out), "--address", cluster.address,
                            env=env, timeout=120, attached=False)
    took = time.monotonic() - started
    printed = done.stdout + done.stderr
    assert done.returncode != 0, printed[-3000:]
    assert took < 60, f"refused after {took:.0f} s"
    assert "Traceback" not in printed, printed[-3000:]
    assert "token" in done.stderr, done.stderr[-3000:]
    assert not out.exists()


def test_every_socket_of_the_cluster_and_its_drivers_is_on_the_loopback_address(cluster):
    cluster.watch.sample()  # the processes still there: nodes, agents, idle workers
    assert not cluster.watch.errors, cluster.watch.errors
    seen = cluster.watch.snapshot()
    off = [(pid, s.name[:60], local) for (pid, _), s in seen.items() for local in s.listening if local[0] != LOOPBACK]
    assert not off, f"listening off the loopback address: {off}"
    off = [(pid, s.name[:60], local, remote) for (pid, _), s in seen.items() for local, remote in s.connections
           if local[0] != LOOPBACK or remote[0] != LOOPBACK]
    assert not off, f"connected off the loopback address: {off}"

    # What was seen covers the cluster: its GCS, both raylets, and every command attached to it.
    listening = {pid: s for (pid, _), s in seen.items() if s.listening}
    assert any("gcs_server" in s.name for s in listening.values())
    assert sum("raylet" in s.name.split(" ")[0] for s in listening.values()) == 2
    assert set(cluster.attached) <= set(listening), "a fedfleet command was not seen listening"


def test_the_cluster_stops_by_the_ids_of_its_processes(cluster):
    assert tag_processes(cluster.tag)
    cluster.watch.stop()
    assert stop_processes(cluster.tag) == {}
    assert not tag_processes(cluster.tag)
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, int(cluster.address.rsplit(":", 1)[1])), timeout=5).close()
