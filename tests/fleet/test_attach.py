"""Attaching to a Ray cluster fails fast and says why, and a run without an address never attaches.

- A plain run starts its own local Ray even when the environment names a cluster: RAY_ADDRESS set (as on a
  cluster's login node), or the address file a stopped `ray start` left in Ray's temporary folder.
- `--address` where nothing listens, where something listens but never answers, or where a cluster refuses
  this process's token: the command exits with status 2 and a message naming the cause and the fix, without
  a traceback and without a run folder.

A token-authenticated cluster is easy to come by: every local Ray that fedfleet starts has one (Ray makes
a token for it), so a second process with a different token is refused.
"""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fleet.cluster import ClusterUnavailable, check_cluster, version_mismatch

ROOT = str(Path(__file__).parents[2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fedfleet(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scenarios.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture
def ray_tmp(tmp_path_factory) -> str:
    """Ray's temporary folder for the processes of one test, so that none finds another's cluster (short:
    Ray's socket paths live under it)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ra", dir="/tmp") as folder:
        yield folder


@pytest.mark.parametrize("named_by", ["RAY_ADDRESS", "the file of a stopped ray start"])
def test_a_run_without_an_address_starts_its_own_ray(ray_tmp, named_by):
    dead = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    if named_by == "RAY_ADDRESS":
        env["RAY_ADDRESS"] = dead
    else:
        Path(ray_tmp, "ray").mkdir()
        Path(ray_tmp, "ray", "ray_current_cluster").write_text(dead)
    code = textwrap.dedent("""
        import ray
        from fleet.pool import start_ray
        start_ray(None, 1)
        print("cpus", ray.cluster_resources()["CPU"])
        ray.shutdown()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cpus 1.0" in done.stdout


def test_an_address_where_nothing_listens_is_refused_at_once(tmp_path, ray_tmp):
    out = tmp_path / "run"
    done = fedfleet("run", "quickstart", "--smoke", "--quiet", "--address", f"127.0.0.1:{free_port()}",
                    "--out", str(out), env={**os.environ, "RAY_TMPDIR": ray_tmp}, timeout=60)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "runtime.address: nothing answers at 127.0.0.1:" in done.stderr and "ray start --head" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_an_address_that_never_answers_is_given_up_after_the_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel does), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(ClusterUnavailable, match="no Ray cluster answered within 1.5 s"):
            check_cluster(f"127.0.0.1:{silent.getsockname()[1]}", 1.5)


def test_a_cluster_that_refuses_the_token_is_named_with_the_fix(tmp_path, ray_tmp):
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_AUTH_MODE", None)
    serve = textwrap.dedent("""
        import sys, time
        import ray
        from fleet.pool import start_ray
        start_ray(None, 1)
        print(ray.get_runtime_context().gcs_address, flush=True)
        sys.stdin.read()  # until the test closes it
    """)
    cluster = subprocess.Popen([sys.executable, "-c", serve], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=ROOT, env=env)
    try:
        address = cluster.stdout.readline().strip()
        out = tmp_path / "run"
        done = fedfleet("run", "quickstart", "--smoke", "--quiet", "--address", address, "--out", str(out),
                        env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-clusters-token"},
                        timeout=60)
    finally:
        cluster.stdin.close()
        cluster.wait(timeout=120)
    assert address.startswith("127.0.0.1:"), address
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"the cluster at {address} refused this process's token" in done.stderr
    assert "RAY_AUTH_TOKEN_PATH" in done.stderr and "Traceback" not in done.stderr and not out.exists()


def test_a_version_mismatch_names_both_sides():
    import ray

    python = ".".join(map(str, sys.version_info[:3]))
    assert version_mismatch({"ray_version": ray.__version__, "python_version": python}) is None
    said = version_mismatch({"ray_version": "2.9.3", "python_version": "3.10.4"})
    assert f"runs Ray 2.9.3 on Python 3.10.4; this process has Ray {ray.__version__} on Python {python}" in said
