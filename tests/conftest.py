import itertools
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every test that needs it: starting Ray costs seconds."""
    from fleet.pool import start_ray
    import ray

    started = start_ray(None, num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for report checks. CI installs it and sets FEDFLEET_REQUIRE_BROWSER=1, so there a
    missing browser fails instead of skipping."""
    from analysis.browser import find_browser

    path = find_browser()
    if path is None:
        message = "no Chromium on this machine (Debian: apt-get install chromium)"
        if os.environ.get("FEDFLEET_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_jsonl(tmp_path_factory) -> Path:
    """Client text for short real runs: eight clients of ten three-line speeches (tokenising the plays
    would take most of such a run)."""
    path = tmp_path_factory.mktemp("data") / "clients.jsonl"
    words = "thou art the sun and moon of all my heart good lord what say you now".split()
    with path.open("w") as fh:
        for client, speech in itertools.product(range(8), range(10)):
            text = "\n".join(" ".join(words[(client + speech + i + j) % len(words)] for j in range(12))
                             for i in range(3))
            fh.write(json.dumps({"client_id": f"c{client}", "text": text}) + "\n")
    return path
