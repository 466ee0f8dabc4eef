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
