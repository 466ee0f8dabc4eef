import os

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
