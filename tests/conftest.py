import base64
import itertools
import json
import os
import re
from pathlib import Path

import numpy as np
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


def _decoded(value) -> list:
    """A trace's data array: plotly writes numpy arrays as {'dtype', 'bdata' (base64)}."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return list(value) if isinstance(value, (list, tuple)) else []


def page_figures(page: str) -> list[dict]:
    """Each plotly figure of a page as {'title', 'traces'}: a trace's arrays decoded into lists, and
    'points', how many non-null values its x, y and q1 (precomputed boxes) hold."""
    decoder, comma, figures = json.JSONDecoder(), re.compile(r"\s*,\s*"), []
    for call in re.finditer(r"Plotly\.newPlot\(\s*", page):
        _, at = decoder.raw_decode(page, call.end())  # the div id
        data, at = decoder.raw_decode(page, comma.match(page, at).end())
        layout, _ = decoder.raw_decode(page, comma.match(page, at).end())
        traces = [{**t, **{k: _decoded(t[k]) for k in ("x", "y", "q1") if k in t}} for t in data]
        for t in traces:
            t["points"] = sum(v is not None for k in ("x", "y", "q1") for v in t.get(k, []))
        figures.append({"title": layout.get("title", {}).get("text", ""), "traces": traces})
    return figures


@pytest.fixture
def figures_of():
    """figures_of(html_path) -> the page's figures (page_figures)."""
    return lambda path: page_figures(path.read_text(encoding="utf-8"))
