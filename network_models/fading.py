"""Small-scale fading: one power gain per transfer, in dB (block fading; REFERENCE.md section 5).

Scenario: on top of path loss and shadowing, multipath makes the received power flicker around its mean.
We hold the channel still for one whole transfer (block fading) and draw a power gain |h|^2 with mean 1 for it:
"none" (always 1, i.e. 0 dB), "rayleigh" (no dominant path: |h|^2 ~ Exp(1)) or "rician" (a line-of-sight
path K times stronger than the scattered ones). Add the gain in dB to the received power, i.e. subtract it
from the path loss. Random draws come from the numpy Generator passed in, never from a module RNG.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

FadingModel = Literal["none", "rayleigh", "rician"]
FADING_MODELS: tuple[str, ...] = get_args(FadingModel)

# TR 38.901 Table 7.5-6 gives a mean K-factor of 9 dB for UMa and UMi LOS (7 dB for RMa).
DEFAULT_K_FACTOR_DB = 9.0


def fading_gain_db(
    rng: np.random.Generator, model: FadingModel, size: int | tuple[int, ...], k_factor_db: float = DEFAULT_K_FACTOR_DB
) -> np.ndarray:
    """`size` independent fading power gains in dB, mean 1 in linear terms.

    A deep fade can reach -inf dB (a zero draw); the rate on such a link is then 0, which is the honest answer.

    >>> fading_gain_db(np.random.default_rng(0), "none", 3)
    array([0., 0., 0.])
    """
    if model == "none":
        return np.zeros(size)
    if model == "rayleigh":
        power = rng.standard_exponential(size)
    elif model == "rician":
        k = 10.0 ** (k_factor_db / 10.0)
        # h = sqrt(K/(K+1)) (line of sight) + sqrt(1/(K+1)) CN(0, 1) (scatter), so E|h|^2 = 1.
        scatter = (rng.standard_normal(size) + 1j * rng.standard_normal(size)) / np.sqrt(2.0)
        power = np.abs(np.sqrt(k / (k + 1.0)) + np.sqrt(1.0 / (k + 1.0)) * scatter) ** 2
    else:
        raise ValueError(f"unknown fading model {model!r}; choose one of {', '.join(FADING_MODELS)}")
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power)
