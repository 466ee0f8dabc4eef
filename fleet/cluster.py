"""Attaching to a Ray cluster that someone started (`ray start`): is it there, will it take this process,
and what to do when not, found out before `ray.init` is called and within a bounded wait.

`ray.init(address=...)` meets an address where nothing listens by retrying for minutes and then ending the
process from C++, and a wrong or missing token by a screen of retries and a traceback. The checks here ask
first, each with a timeout: does anything accept a connection there; does Ray's GCS answer this process's
token; does the cluster run this process's Ray and Python versions.

Ray is imported only when a cluster is checked, so that the CLI can name this module's error cheaply.
"""

from __future__ import annotations

import os
import socket
import sys
import threading

TOKEN_HELP = ("Every node and this process need the cluster's token: RAY_AUTH_MODE=token, and the token in "
              "RAY_AUTH_TOKEN_PATH (a file) or RAY_AUTH_TOKEN (see docs/cluster.md)")


class ClusterUnavailable(ConnectionError):
    """The cluster named by runtime.address cannot be attached to; the message says why and what to do."""


def cluster_address(address: str) -> str:
    """host:port of `address`; 'auto' is looked up as Ray does (RAY_ADDRESS, then the last `ray start` on this
    machine)."""
    if address == "auto":
        from ray._private.services import get_ray_address_from_environment

        try:
            address = get_ray_address_from_environment("auto", None)
        except ConnectionError:
            raise ClusterUnavailable("runtime.address: 'auto' found no Ray cluster (no RAY_ADDRESS, and no "
                                     "`ray start` on this machine); give its host:port") from None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnavailable(f"runtime.address: {address!r} is not host:port (as `ray start --head` prints it)")
    return f"{host}:{port}"


def check_cluster(address: str, timeout_s: float) -> str:
    """host:port of a cluster this process can attach to, or ClusterUnavailable saying why not."""
    address = cluster_address(address)
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterUnavailable(
            f"runtime.address: nothing answers at {address} ({err.strerror or type(err).__name__}). Start the "
            f"cluster's head there (`ray start --head --port={port}`) or give the address it printed") from None
    metadata = _ask_gcs(address, timeout_s)
    mismatch = version_mismatch(metadata)
    if mismatch:
        raise ClusterUnavailable(f"runtime.address: the cluster at {address} {mismatch}")
    return address


def version_mismatch(metadata: dict) -> str | None:
    """What differs between the cluster's Ray and Python and this process's, or None. Ray refuses a driver
    whose Ray version or Python version (to the patch level) differs from the cluster's."""
    import ray

    ours = {"ray_version": ray.__version__, "python_version": ".".join(map(str, sys.version_info[:3]))}
    if all(metadata.get(key, ours[key]) == ours[key] for key in ours):
        return None
    return (f"runs Ray {metadata.get('ray_version')} on Python {metadata.get('python_version')}; this process "
            f"has Ray {ours['ray_version']} on Python {ours['python_version']}. Install the same versions of both "
            "on every node and where fedfleet runs")


def _ask_gcs(address: str, timeout_s: float) -> dict:
    """The cluster's metadata (its versions), asked of its GCS with this process's token. In a thread: Ray's
    client waits on an address that accepts connections but never answers for far longer than `timeout_s`."""
    from ray._common.usage.usage_lib import get_cluster_metadata
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    answer: dict = {}

    def ask():
        try:
            answer["metadata"] = get_cluster_metadata(GcsClient(address=address)) or {}
        except Exception as err:  # handed to the caller
            answer["error"] = err

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise ClusterUnavailable(f"runtime.address: {address} accepts connections but no Ray cluster answered "
                                 f"within {timeout_s:g} s (runtime.connect_timeout_s); is it the port "
                                 "`ray start --head` printed?")
    err = answer.get("error")
    if isinstance(err, AuthenticationError):
        mode = os.environ.get("RAY_AUTH_MODE", "disabled")
        raise ClusterUnavailable(f"runtime.address: the cluster at {address} refused this process's token "
                                 f"(RAY_AUTH_MODE is {mode!r} here). {TOKEN_HELP}") from None
    if err is not None:
        raise ClusterUnavailable(f"runtime.address: the cluster at {address} did not answer as a Ray cluster "
                                 f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    return answer["metadata"]
