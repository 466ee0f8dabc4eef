"""A local Ray started by fedfleet opens nothing beyond this machine: every listening TCP socket of its
processes is bound to a loopback address, and no dashboard runs.

Ray starts in a child process of its own (this test process may already hold a Ray), which reports the
listening sockets of its process tree, read from /proc/net/tcp{,6} and matched to the tree's socket inodes.
"""

import ipaddress
import os
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

REPORT = textwrap.dedent('''
    import json, os, socket, sys
    sys.path.insert(0, sys.argv[1])
    import ray
    from fleet.pool import start_ray

    def listening():
        """(address, port, inode) of every TCP socket in LISTEN state (state 0A)."""
        out = []
        for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
            for line in open(f"/proc/net/{name}").read().splitlines()[1:]:
                f = line.split()
                if f[3] != "0A":
                    continue
                address, port = f[1].split(":")
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                out.append((socket.inet_ntop(family, raw), int(port, 16), int(f[9])))
        return out

    def tree(root):
        kids = {}
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            kids.setdefault(ppid, []).append(int(p))
        found, todo = {root}, [root]
        while todo:
            for child in kids.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def sockets(pids):
        owner = {}
        for pid in pids:
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        owner[int(target[8:-1])] = pid
            except OSError:
                pass
        return owner

    def command(pid):
        try:
            return open(f"/proc/{pid}/cmdline").read().replace("\\0", " ").strip()
        except OSError:
            return ""

    def dashboard_answers(port):
        """Does an HTTP server on this port answer the dashboard's version query?"""
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2) as r:
                return r.status == 200 and b"ray_version" in r.read()
        except Exception:
            return False

    start_ray(None, 1)
    ray.get(ray.put(1))
    pids = tree(os.getpid())
    owner = sockets(pids)
    bound = [(a, p, command(owner[i])[:80]) for a, p, i in listening() if i in owner]
    print(json.dumps({"bound": bound, "answering": [p for _, p, _ in bound if dashboard_answers(p)],
                      "dashboard_url": ray._private.worker._global_node.webui_url}))
    ray.shutdown()
''')


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or ip).is_loopback


def test_is_loopback_reads_every_form():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1"]))


def test_local_ray_listens_on_loopback_only_and_has_no_dashboard(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(REPORT)
    done = subprocess.run([sys.executable, str(script), str(Path(__file__).parents[2])], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    bound = report["bound"]
    assert bound, "the Ray processes listen on nothing: the scan is broken"
    exposed = [b for b in bound if not is_loopback(b[0])]
    assert exposed == [], exposed
    # Ray still runs its dashboard process for internal modules, but no web server answers
    assert report["answering"] == [] and not report["dashboard_url"]
    assert 8265 not in [port for _, port, _ in bound]  # Ray's dashboard port


def test_a_local_ray_keeps_token_authentication_and_does_not_warn_about_it(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import ray
        from ray._private.authentication.authentication_token_setup import get_authentication_mode
        from fleet.pool import start_ray
        start_ray(None, 1)
        print("mode", get_authentication_mode())
        ray.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parents[2])], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mode 1" in done.stdout  # 1: token authentication (0 would be disabled)
    assert "Token authentication" not in done.stdout + done.stderr
