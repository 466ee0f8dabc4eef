"""No file is ever unpickled: unpickling runs whatever code the file names, and scenario files name user files.

The source of every package is scanned for the calls that unpickle; the loading paths themselves are tested
with a pickle that leaves a mark when loaded (tests/scenarios/test_checks.py).
"""

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGES = ("aggregation", "analysis", "fleet", "network_models", "scenarios", "benchmarks")
UNSAFE = {
    "pickle.load": re.compile(r"\b(c?pickle|dill|joblib|cloudpickle)\.loads?\("),
    "torch.load without weights_only=True": re.compile(r"\btorch\.load\((?![^)]*weights_only\s*=\s*True)"),
    "np.load without allow_pickle=False": re.compile(r"\bnp\.load\((?![^)]*allow_pickle\s*=\s*False)"),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "pandas.read_pickle": re.compile(r"\bread_pickle\("),
}


def test_no_source_file_unpickles():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            found += [f"{path.relative_to(ROOT)}: {name}" for name, pattern in UNSAFE.items() if pattern.search(text)]
    assert found == []


def test_the_scan_catches_what_it_looks_for():
    samples = {"pickle.load": "x = pickle.load(f)", "torch.load without weights_only=True": "torch.load(path)",
               "np.load without allow_pickle=False": "np.load(p, mmap_mode='r')",
               "allow_pickle=True": "np.load(p, allow_pickle=True)", "pandas.read_pickle": "pd.read_pickle(p)"}
    for name, line in samples.items():
        assert UNSAFE[name].search(line), name
    assert not UNSAFE["torch.load without weights_only=True"].search("torch.load(path, weights_only=True)")
    assert not UNSAFE["np.load without allow_pickle=False"].search("np.load(p, allow_pickle=False)")
