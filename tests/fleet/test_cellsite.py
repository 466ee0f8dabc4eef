"""Cell-site operations logs: counts, labels, KPI physics, non-IID sites, detection baseline, file formats.

Speed, measured and not asserted: `python -m fleet.cellsite --sites 1000 --days 7` generates its 2.0 million
lines in 3.5-6 s on one core and writes the 240 MB JSONL in 2-3 s more.
"""

import csv
import json
import re
from datetime import datetime, timedelta

import numpy as np
import pytest

from fleet.auroc import auroc
from fleet.cellsite import (
    CellSiteConfig,
    FaultKind,
    SiteType,
    generate,
    split_site,
    to_clients,
    windows_with_labels,
)
from fleet.cellsite_files import main, write_jsonl, write_labels
from fleet.data import jsonl_clients

KPI = re.compile(
    r"^(\S+) site=(S\d+) sec=(\d) ues=(\d+) prb_dl=(\S+) rsrp=(\S+) sinr=(\S+) thp_dl=(\S+) thp_ul=(\S+) "
    r"drop=(\d+\.\d\d) hof=(\S+)$"
)
FIELDS = ("ues", "prb_dl", "rsrp", "sinr", "thp_dl", "thp_ul", "drop", "hof")
CONFIG = CellSiteConfig(sites=60, days=7, fault_rate_per_day=0.4)


@pytest.fixture(scope="module")
def logs():
    return generate(CONFIG, seed=3)


@pytest.fixture(scope="module")
def clean():
    """The same fleet with no faults: the same weather, traffic and noise."""
    return generate(CellSiteConfig(sites=60, days=7, fault_rate_per_day=0.0), seed=3)


@pytest.fixture(scope="module")
def tables(logs):
    return [kpis(site.lines, site.labels) for site in logs.sites]


@pytest.fixture(scope="module")
def clean_tables(clean):
    return [kpis(site.lines, site.labels) for site in clean.sites]


def kpis(lines, labels):
    """The KPI lines parsed from the text: index into lines, stamp, sector, values and label."""
    rows = [(i, m) for i, line in enumerate(lines) if (m := KPI.match(line))]
    table = {
        "line": np.array([i for i, _ in rows]),
        "ts": [m.group(1) for _, m in rows],
        "sec": np.array([int(m.group(3)) for _, m in rows]),
    }
    table["at"] = np.array([ts[:-1] for ts in table["ts"]], dtype="datetime64[m]")
    for k, name in enumerate(FIELDS):
        table[name] = np.array([float("nan") if m.group(4 + k) == "na" else float(m.group(4 + k)) for _, m in rows])
    table["label"] = np.asarray(labels)[table["line"]]
    return table


def ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x))


def when(line: str) -> datetime:
    return datetime.strptime(line[:17], "%Y-%m-%dT%H:%MZ")


def overlapping(table, fault):
    """KPI rows whose 15-minute period overlaps the fault, on its sectors."""
    start, end = np.datetime64(fault.start, "m"), np.datetime64(fault.end, "m")
    stamps = table["at"]
    return (stamps - np.timedelta64(15, "m") <= end) & (stamps > start) & np.isin(table["sec"], fault.sectors)


def event_lines(site):
    """(time, line, label) of the ALARM and CFG lines."""
    return [(when(line), line, label) for line, label in zip(site.lines, site.labels) if not KPI.match(line)]


@pytest.mark.parametrize(
    "field, value",
    [("sites", 0), ("days", -1), ("period_min", 7), ("sectors", 10), ("fault_rate_per_day", -0.1),
     ("start", "2026-02-30"), ("regions", 0), ("days", True)],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CellSiteConfig(**{field: value})


def test_same_seed_same_text_other_seed_differs():
    config = CellSiteConfig(sites=4, days=2, fault_rate_per_day=1.0)
    a, b, c = generate(config, 0), generate(config, 0), generate(config, 1)
    assert [s.lines for s in a.sites] == [s.lines for s in b.sites]
    assert all((x.labels == y.labels).all() for x, y in zip(a.sites, b.sites))
    assert all(x.lines != y.lines for x, y in zip(a.sites, c.sites))


def test_a_site_does_not_depend_on_fleet_size():
    small, large = generate(CellSiteConfig(sites=3, days=2), 5), generate(CellSiteConfig(sites=7, days=2), 5)
    assert [s.lines for s in small.sites] == [s.lines for s in large.sites[:3]]


@pytest.mark.parametrize("days, period_min, sectors", [(7, 15, 3), (2, 60, 2), (1, 5, 1)])
def test_one_kpi_line_per_sector_and_period(days, period_min, sectors):
    config = CellSiteConfig(sites=3, days=days, period_min=period_min, sectors=sectors, fault_rate_per_day=2.0)
    start = datetime(2026, 3, 2)
    for site in generate(config, 0).sites:
        table = kpis(site.lines, site.labels)
        assert len(table["ts"]) == days * 1440 // period_min * sectors
        assert table["ts"][0] == f"{start + timedelta(minutes=period_min):%Y-%m-%dT%H:%M}Z"
        assert table["ts"][-1] == f"{start + timedelta(days=days):%Y-%m-%dT%H:%M}Z"
        assert table["sec"].tolist() == list(range(1, sectors + 1)) * (days * 1440 // period_min)
        stamps = [line.split(" ", 1)[0] for line in site.lines]
        assert stamps == sorted(stamps)  # ISO stamps of one width sort as text


def test_kpi_lines_are_labelled_exactly_where_events_overlap(logs, tables):
    checked = 0
    for site, table in zip(logs.sites, tables):
        expected = np.zeros(len(table["ts"]), dtype=int)
        for f in site.faults:
            rows = overlapping(table, f)
            assert not expected[rows].any(), "faults of one site overlap"
            expected[rows] = f.kind
            checked += int(rows.sum())
        assert (table["label"] == expected).all(), site.site_id
    assert checked > 1000


def test_event_lines_fall_inside_their_events(logs):
    for site in logs.sites:
        for ts, line, label in event_lines(site):
            if label != FaultKind.NORMAL:
                assert any(f.kind == label and f.start <= ts <= f.end for f in site.faults), line


def test_alarms_for_hardware_and_backhaul_only(logs):
    log_end = datetime(2026, 3, 9)
    kinds_seen = set()
    for site in logs.sites:
        alarms = [(line, label) for line, label in zip(site.lines, site.labels) if " ALARM " in line]
        assert {int(label) for _, label in alarms} <= {FaultKind.HARDWARE, FaultKind.BACKHAUL}
        for f in site.faults:
            kinds_seen.add(f.kind)
            stamp = f"{f.start:%Y-%m-%dT%H:%M}Z"
            inside = [line for ts, line, _ in event_lines(site) if f.start <= ts <= f.end]
            if f.kind in (FaultKind.HARDWARE, FaultKind.BACKHAUL):
                assert f"{stamp} ALARM site={site.site_id}" in inside[0] and f"code={f.detail}" in inside[0]
                assert "state=raised" in inside[0]
                assert f.end == log_end or "state=cleared" in inside[-1]
            else:
                assert not any(" ALARM " in line for line in inside)
            if f.kind is FaultKind.INTERFERENCE:
                assert not inside
            if f.kind is FaultKind.MISCONFIG:
                param, bad = f.detail.split("=")
                assert inside[0].startswith(f"{stamp} CFG") and f"param={param}" in inside[0]
                assert inside[0].endswith(f"new={bad}")
    assert kinds_seen == set(FaultKind) - {FaultKind.NORMAL}


def test_benign_config_changes_are_normal(logs):
    benign = [line for s in logs.sites for line, label in zip(s.lines, s.labels) if " CFG " in line and label == 0]
    assert len(benign) > 20
    for line in benign:
        old, new = (int(x) for x in re.search(r"old=(\d+) new=(\d+)$", line).groups())
        assert old != new and new < 1000  # one notch of tuning, never a handover-breaking value


def test_faults_leave_every_other_period_as_it_was(logs, clean):
    compared = 0
    for site, same in zip(logs.sites, clean.sites):
        touched = set(site.period[site.labels != FaultKind.NORMAL].tolist())
        kept = [line for line, p in zip(site.lines, site.period) if p not in touched and KPI.match(line)]
        assert set(kept) <= set(same.lines), site.site_id
        compared += len(kept)
    assert compared > 0.9 * CONFIG.sites * CONFIG.periods * CONFIG.sectors


def test_prb_tracks_load_and_user_throughput_falls_as_cells_fill(clean, clean_tables):
    for site, t in zip(clean.sites, clean_tables):
        for sec in np.unique(t["sec"]):
            rows = t["sec"] == sec
            # Rank correlation: PRB use saturates below 100 % in the busiest cells.
            assert np.corrcoef(ranks(t["ues"][rows]), ranks(t["prb_dl"][rows]))[0, 1] > 0.9, site.site_id
            busy = t["prb_dl"][rows] > 50
            if busy.sum() > 20:
                quiet = t["prb_dl"][rows] < 20
                assert np.median(t["thp_dl"][rows][busy]) < 0.7 * np.median(t["thp_dl"][rows][quiet])


def test_rain_lowers_sinr(clean, clean_tables):
    gaps = []
    for site, t in zip(clean.sites, clean_tables):
        rain = site.rain[site.period[t["line"]]]
        if (rain > 0.6).sum() >= 12:
            gaps.append(np.mean(t["sinr"][rain > 0.6]) - np.mean(t["sinr"][rain == 0]))
    assert len(gaps) >= 10
    assert np.mean(gaps) < -1.0 and np.mean(np.array(gaps) < 0) > 0.8


def _during(logs, tables, clean_tables, kind):
    """(faulty, clean) values of the same KPI lines inside every fault of one kind."""
    pairs = []
    for site, t, c in zip(logs.sites, tables, clean_tables):
        assert t["ts"] == c["ts"]  # the same KPI lines, in the same order
        for f in site.faults:
            if f.kind is kind:
                rows = overlapping(t, f)
                pairs.append(({k: t[k][rows] for k in FIELDS}, {k: c[k][rows] for k in FIELDS}))
    assert pairs, kind
    return pairs


def test_interference_collapses_sinr_without_alarm(logs, tables, clean_tables):
    for faulty, normal in _during(logs, tables, clean_tables, FaultKind.INTERFERENCE):
        assert np.mean(normal["sinr"] - faulty["sinr"]) > 2.5


def test_backhaul_loss_collapses_throughput_and_drops_calls(logs, tables, clean_tables):
    for faulty, normal in _during(logs, tables, clean_tables, FaultKind.BACKHAUL):
        assert faulty["thp_dl"].sum() < 0.2 * normal["thp_dl"].sum()
        assert np.mean(faulty["drop"]) > np.mean(normal["drop"]) + 2


def test_hardware_fault_darkens_or_weakens_its_sector(logs, tables, clean_tables):
    for faulty, normal in _during(logs, tables, clean_tables, FaultKind.HARDWARE):
        dark = np.isnan(faulty["rsrp"])
        assert dark.all() or not dark.any()
        if dark.all():
            assert (faulty["ues"] == 0).all() and (faulty["thp_dl"] == 0).all()
        else:
            assert np.mean(normal["rsrp"] - faulty["rsrp"]) > 1.5


def test_misconfig_raises_handover_failures(logs, tables, clean_tables):
    for faulty, normal in _during(logs, tables, clean_tables, FaultKind.MISCONFIG):
        assert np.mean(faulty["hof"]) > 1.8 * np.mean(normal["hof"])


def test_sites_are_not_alike(clean, clean_tables):
    by_type = {}
    for site, t in zip(clean.sites, clean_tables):
        began = t["at"] - np.timedelta64(15, "m")  # the period a line reports
        day = began.astype("datetime64[D]")
        weekday = (day.astype(np.int64) + 3) % 7 < 5  # 1970-01-01 was a Thursday
        hour = (began - day).astype("timedelta64[h]").astype(int)
        profile = [t["ues"][weekday & (hour == h)].mean() for h in range(24)]
        by_type.setdefault(site.site_type, []).append((int(np.argmax(profile)), t["ues"].mean(), np.mean(t["rsrp"])))
    peak = {k: np.median([p for p, _, _ in v]) for k, v in by_type.items()}
    load = {k: np.mean([u for _, u, _ in v]) for k, v in by_type.items()}
    rsrp = {k: np.mean([r for _, _, r in v]) for k, v in by_type.items()}
    assert 9 <= peak[SiteType.BUSINESS] <= 16 and 18 <= peak[SiteType.RESIDENTIAL] <= 22
    assert load[SiteType.BUSINESS] > 3 * load[SiteType.RURAL]
    assert rsrp[SiteType.RURAL] < rsrp[SiteType.BUSINESS] - 8
    assert len(by_type) == len(SiteType)


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),  # positive 0.35 loses to negative 0.4 only
        ([1, 2, 2, 3], [0, 1, 0, 1], 0.875),  # the tie at 2 counts half: (1 + 0.5 + 1 + 1) / 4
    ],
)
def test_auroc_known_values(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_needs_both_classes():
    with pytest.raises(ValueError, match="positive and one negative"):
        auroc([0.1, 0.2], [1, 1])


def test_windows_with_labels():
    lines = list("abcdefg")
    assert windows_with_labels(lines, [0, 0, 1, 0, 0, 0, 3], 2) == [("a\nb", False), ("c\nd", True), ("e\nf", False)]


def test_split_site_keeps_the_last_days_for_test(logs):
    site = logs.sites[0]
    train, test, labels = split_site(site, 2)
    assert train + test == site.lines and len(labels) == len(test)
    assert max(line[:17] for line in train) <= "2026-03-07T00:00Z" <= min(line[:17] for line in test)
    assert next(line for line in test if KPI.match(line)).startswith("2026-03-07T00:15Z site=")
    with pytest.raises(ValueError, match="test_days"):
        split_site(site, 7)


def _line_score(line: str, normal: dict) -> float:
    """How far a line's KPIs sit from the sector's own history, in robust standard deviations."""
    m = KPI.match(line)
    if not m:
        return 0.0
    if m.group(6) == "na":
        return 50.0
    sec = int(m.group(3))
    value = {name: float(m.group(4 + k)) for k, name in enumerate(FIELDS)}
    z = [(value[k] - normal[sec, k][0]) / normal[sec, k][1] for k in ("rsrp", "sinr", "drop", "hof")]
    return max(-z[0], -z[1], z[2], z[3])


def test_a_kpi_rule_baseline_finds_the_faults(logs):
    """Labels are learnable: z-scores of four KPIs against each sector's own past reach a high AUROC."""
    scores, labels = [], []
    for site in logs.sites:
        train, test, test_labels = split_site(site, 2)
        history = kpis(train, site.labels[: len(train)])
        normal = {}
        for sec in np.unique(history["sec"]):
            for k in ("rsrp", "sinr", "drop", "hof"):
                v = history[k][(history["sec"] == sec) & ~np.isnan(history[k])]
                mad = np.median(np.abs(v - np.median(v)))
                normal[sec, k] = (np.median(v), 1.4826 * mad + 1e-3)
        for text, fault in windows_with_labels(test, test_labels, 12):
            scores.append(max(_line_score(line, normal) for line in text.split("\n")))
            labels.append(fault)
    assert 20 <= sum(labels) < len(labels) / 2
    assert auroc(scores, labels) > 0.85


def test_jsonl_round_trips_through_jsonl_clients(logs, tmp_path):
    path = tmp_path / "cellsite.jsonl"
    records = write_jsonl(logs, path, chunk_lines=40)
    clients = jsonl_clients(path, min_lines=16)
    assert records == sum(1 for _ in open(path))
    assert clients == sorted(to_clients(logs, chunk_lines=40), key=lambda c: c.client_id)
    assert all(len(speech) <= 40 for c in clients for speech in c.lines)


def test_jsonl_leaves_out_the_test_days(logs, tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(logs, path, test_days=1)
    text = "".join(json.loads(line)["text"] for line in open(path))
    assert "2026-03-07T23:45Z" in text and "2026-03-08T01:00Z" not in text


def test_labels_csv_lists_every_event(logs, tmp_path):
    path = tmp_path / "faults.csv"
    write_labels(logs, path)
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == len(logs.faults)
    first = logs.faults[0]
    assert rows[0]["site"] == first.site and rows[0]["kind"] == first.kind.name.lower()
    assert rows[0]["start"] == f"{first.start:%Y-%m-%dT%H:%M}Z"
    assert {r["kind"] for r in rows} == {"hardware", "backhaul", "interference", "misconfig"}


def test_command_line(tmp_path, capsys):
    main(["--sites", "3", "--days", "2", "--seed", "1", "--out", str(tmp_path)])
    assert (tmp_path / "cellsite.jsonl").stat().st_size > 0 and (tmp_path / "faults.csv").exists()
    assert "3 sites x 2 days" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["--sites", "0", "--out", str(tmp_path)])
    assert stop.value.code == 2
