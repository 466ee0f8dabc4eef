"""Large-scale path loss in dB between a base station and a device (REFERENCE.md section 5).

Scenario: a device stands at ground (2D) distance d metres from its cell's base station and talks on a carrier
of f GHz. How many dB does the signal lose on the way, before shadowing and fading? The 3GPP TR 38.901
Table 7.4.1-1 models (urban macro, urban micro street canyon, rural macro; LOS and NLOS) answer with the 3D
distance between the antennas and a LOS breakpoint beyond which the loss grows with 40 log10(d). NLOS is
max(LOS, NLOS formula), as the standard says, so blocking a path never makes it better. Two textbook models
round it off: free space (Friis) and log-distance with exponent n.

Whether a device sees its site at all is itself random: TR 38.901 Table 7.4.2-1 gives the probability of a
line of sight by 2D distance for each scenario. The family names alone ("uma", "umi", "rma") mean that mix:
each device is LOS or NLOS by its own draw (`los_probability`), and `path_loss_db` takes the draws as `los`.

Units: distances and heights in metres, carrier in GHz, losses in dB. The 3GPP formulas are fitted for
10 m <= d <= 5 km (10 km for RMa LOS); outside that range they are extrapolated, not clamped.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

PathLossModel = Literal[
    "uma", "umi", "rma", "uma_los", "uma_nlos", "umi_los", "umi_nlos", "rma_los", "rma_nlos", "free_space",
    "log_distance",
]
MIXED_FAMILIES = ("uma", "umi", "rma")  # LOS or NLOS per device, by TR 38.901's LOS probability
PATH_LOSS_MODELS: tuple[str, ...] = get_args(PathLossModel)

# The 3GPP constants (the 40 pi / 3 of RMa, the breakpoint notes) assume c = 3.0e8 m/s; using the exact value
# would shift nothing that matters (0.006 dB) but would make the formulas disagree with the tables.
SPEED_OF_LIGHT_M_S = 3.0e8

UMA_BS_HEIGHT_M = 25.0
UMI_BS_HEIGHT_M = 10.0
RMA_BS_HEIGHT_M = 35.0
# RMa's "average building height" and "street width": the standard's defaults for a rural village.
RMA_BUILDING_HEIGHT_M = 5.0
RMA_STREET_WIDTH_M = 20.0
# UMa/UMi breakpoints use heights above an effective environment height of 1 m (ground clutter).
# For UMa the standard draws h_E at random when the device is above 13 m; we keep 1 m throughout.
EFFECTIVE_ENVIRONMENT_HEIGHT_M = 1.0

DEFAULT_BS_HEIGHT_M = {"uma": UMA_BS_HEIGHT_M, "umi": UMI_BS_HEIGHT_M, "rma": RMA_BS_HEIGHT_M}
# Device heights each family was fitted for (TR 38.901 Table 7.4.1-1); outside them the NLOS height terms
# and the breakpoint stop meaning anything, so we refuse rather than extrapolate silently.
UE_HEIGHT_RANGE_M = {"uma": (1.5, 22.5), "umi": (1.5, 22.5), "rma": (1.0, 10.0)}

# Log-normal shadowing standard deviation in dB per model (TR 38.901 Table 7.4.1-1). RMa LOS is 4 dB before
# the breakpoint and 6 dB after; devices in a cell of a few km sit before it (about 3.8 km at 3.5 GHz).
# Log-distance takes the 8 dB of the older macro model used in wireless-FL papers.
SHADOWING_SIGMA_DB: dict[str, float] = {
    # A mixed family's sigma is its NLOS one; a device drawn LOS takes the LOS sigma (`shadowing_sigma_db`).
    "uma": 6.0,
    "umi": 7.82,
    "rma": 8.0,
    "uma_los": 4.0,
    "uma_nlos": 6.0,
    "umi_los": 4.0,
    "umi_nlos": 7.82,
    "rma_los": 4.0,
    "rma_nlos": 8.0,
    "free_space": 0.0,
    "log_distance": 8.0,
}

# Friis and log-distance say nothing about the near field; clamping at the 1 m reference keeps the loss
# finite and positive at d = 0 instead of -inf.
REFERENCE_DISTANCE_M = 1.0


def los_probability(family: str, distance_m: np.ndarray | float, ue_height_m: float = 1.5) -> np.ndarray:
    """Probability of a line of sight at 2D distance `distance_m` (TR 38.901 Table 7.4.2-1, outdoor devices).

    UMi street canyon: 1 up to 18 m, then 18/d + exp(-d/36) (1 - 18/d). UMa: the same with 63 m, times
    1 + C'(h_UT) 5/4 (d/100)^3 exp(-d/150), where C' = 0 up to 13 m of device height and ((h_UT - 13)/10)^1.5
    above. RMa: 1 up to 10 m, then exp(-(d - 10)/1000).
    """
    d = np.asarray(distance_m, dtype=float)
    if family == "rma":
        return np.where(d <= 10.0, 1.0, np.exp(-(d - 10.0) / 1000.0))
    if family not in ("uma", "umi"):
        raise ValueError(f"no LOS probability for {family!r}; choose uma, umi or rma")
    far = np.maximum(d, 18.0)  # keeps 18/d finite; the near branch is 1 anyway
    scale = 63.0 if family == "uma" else 36.0
    p = 18.0 / far + np.exp(-far / scale) * (1.0 - 18.0 / far)
    if family == "uma" and ue_height_m > 13.0:
        c = ((ue_height_m - 13.0) / 10.0) ** 1.5
        p = p * (1.0 + c * 1.25 * (far / 100.0) ** 3 * np.exp(-far / 150.0))
    return np.where(d <= 18.0, 1.0, p)


def shadowing_sigma_db(model: str, los: np.ndarray | None = None) -> np.ndarray | float:
    """The shadowing sigma of each device: a mixed family's LOS sigma where the device is LOS."""
    if model in MIXED_FAMILIES and los is not None:
        return np.where(los, SHADOWING_SIGMA_DB[f"{model}_los"], SHADOWING_SIGMA_DB[f"{model}_nlos"])
    return SHADOWING_SIGMA_DB[model]


def path_loss_db(
    model: PathLossModel,
    distance_m: np.ndarray | float,
    carrier_ghz: float,
    ue_height_m: float = 1.5,
    exponent: float = 3.5,
    bs_height_m: float | None = None,
    los: np.ndarray | None = None,
) -> np.ndarray:
    """Path loss in dB at ground distance `distance_m` (metres, any shape) on a carrier of `carrier_ghz` GHz.

    `ue_height_m` and `bs_height_m` (None: the model's default, UMa 25 m, UMi 10 m, RMa 35 m) only matter for
    the 3GPP models; free space and log-distance take `distance_m` as the antenna separation. `exponent` is
    the n of "log_distance" only. A mixed family ("uma", "umi", "rma") needs `los`, each device's draw, of
    the shape of `distance_m`.

    >>> round(float(path_loss_db("uma_nlos", 300.0, 3.5)), 1)
    121.3
    >>> round(float(path_loss_db("free_space", 1000.0, 2.4)), 1)
    100.0
    """
    if carrier_ghz <= 0:
        raise ValueError(f"carrier frequency must be positive, got {carrier_ghz} GHz")
    d = np.asarray(distance_m, dtype=float)
    if model == "free_space":
        return _free_space_db(np.maximum(d, REFERENCE_DISTANCE_M), carrier_ghz)
    if model == "log_distance":
        if exponent <= 0:
            raise ValueError(f"log-distance exponent must be positive, got {exponent}")
        d = np.maximum(d, REFERENCE_DISTANCE_M)
        return _free_space_db(REFERENCE_DISTANCE_M, carrier_ghz) + 10.0 * exponent * np.log10(d / REFERENCE_DISTANCE_M)
    if model not in PATH_LOSS_MODELS:
        raise ValueError(f"unknown path loss model {model!r}; choose one of {', '.join(PATH_LOSS_MODELS)}")

    family, _, sight = model.partition("_")
    if not sight:
        if los is None:
            raise ValueError(f"{model}: give each device's line-of-sight draw (los), or name {model}_los or "
                             f"{model}_nlos")
        sight = "mixed"
    low, high = UE_HEIGHT_RANGE_M[family]
    if not low <= ue_height_m <= high:
        raise ValueError(f"{model}: device height {ue_height_m} m is outside the model's {low}-{high} m")
    h_bs = DEFAULT_BS_HEIGHT_M[family] if bs_height_m is None else float(bs_height_m)
    if h_bs <= ue_height_m:
        raise ValueError(f"{model}: base station ({h_bs} m) must stand above the device ({ue_height_m} m)")
    los_db, nlos_db = _FAMILIES[family](d, carrier_ghz, h_bs, ue_height_m)
    nlos_db = np.maximum(los_db, nlos_db)
    if sight == "mixed":
        return np.where(los, los_db, nlos_db)
    return los_db if sight == "los" else nlos_db


def _free_space_db(d: np.ndarray | float, carrier_ghz: float) -> np.ndarray:
    """Friis: 20 log10(4 pi d f / c)."""
    return 20.0 * np.log10(4.0 * np.pi * np.asarray(d) * carrier_ghz * 1e9 / SPEED_OF_LIGHT_M_S)


def _effective_breakpoint_m(carrier_ghz: float, h_bs: float, h_ut: float) -> float:
    """d'_BP = 4 h'_BS h'_UT f_c / c for UMa/UMi, heights above the 1 m environment."""
    h_e = EFFECTIVE_ENVIRONMENT_HEIGHT_M
    return 4.0 * (h_bs - h_e) * (h_ut - h_e) * carrier_ghz * 1e9 / SPEED_OF_LIGHT_M_S


def _uma(d: np.ndarray, fc: float, h_bs: float, h_ut: float) -> tuple[np.ndarray, np.ndarray]:
    d3 = np.hypot(d, h_bs - h_ut)
    bp = _effective_breakpoint_m(fc, h_bs, h_ut)
    before = 28.0 + 22.0 * np.log10(d3) + 20.0 * np.log10(fc)
    after = 28.0 + 40.0 * np.log10(d3) + 20.0 * np.log10(fc) - 9.0 * np.log10(bp**2 + (h_bs - h_ut) ** 2)
    los = np.where(d <= bp, before, after)
    nlos = 13.54 + 39.08 * np.log10(d3) + 20.0 * np.log10(fc) - 0.6 * (h_ut - 1.5)
    return los, nlos


def _umi(d: np.ndarray, fc: float, h_bs: float, h_ut: float) -> tuple[np.ndarray, np.ndarray]:
    d3 = np.hypot(d, h_bs - h_ut)
    bp = _effective_breakpoint_m(fc, h_bs, h_ut)
    before = 32.4 + 21.0 * np.log10(d3) + 20.0 * np.log10(fc)
    after = 32.4 + 40.0 * np.log10(d3) + 20.0 * np.log10(fc) - 9.5 * np.log10(bp**2 + (h_bs - h_ut) ** 2)
    los = np.where(d <= bp, before, after)
    nlos = 22.4 + 35.3 * np.log10(d3) + 21.3 * np.log10(fc) - 0.3 * (h_ut - 1.5)
    return los, nlos


def _rma(d: np.ndarray, fc: float, h_bs: float, h_ut: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = RMA_BUILDING_HEIGHT_M, RMA_STREET_WIDTH_M
    d3 = np.hypot(d, h_bs - h_ut)
    # RMa's breakpoint uses the real antenna heights, not heights above the clutter.
    bp = 2.0 * np.pi * h_bs * h_ut * fc * 1e9 / SPEED_OF_LIGHT_M_S

    def pl1(x: np.ndarray | float) -> np.ndarray:
        return (
            20.0 * np.log10(40.0 * np.pi * x * fc / 3.0)
            + min(0.03 * h**1.72, 10.0) * np.log10(x)
            - min(0.044 * h**1.72, 14.77)
            + 0.002 * np.log10(h) * x
        )

    los = np.where(d <= bp, pl1(d3), pl1(bp) + 40.0 * np.log10(d3 / bp))
    nlos = (
        161.04
        - 7.1 * np.log10(w)
        + 7.5 * np.log10(h)
        - (24.37 - 3.7 * (h / h_bs) ** 2) * np.log10(h_bs)
        + (43.42 - 3.1 * np.log10(h_bs)) * (np.log10(d3) - 3.0)
        + 20.0 * np.log10(fc)
        - (3.2 * np.log10(11.75 * h_ut) ** 2 - 4.97)
    )
    return los, nlos


_FAMILIES = {"uma": _uma, "umi": _umi, "rma": _rma}
