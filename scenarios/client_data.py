"""A scenario's client data, tokenised: Shakespeare's roles, a JSONL file, generated phone-assistant transcripts
or generated cell-site logs, each
client split into its training text and its held-out text; and the fixed held-out windows the global loss is
measured on. Nothing downstream sees text again.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from fleet.assistant import assistant_clients
from fleet.base_model import load_tokenizer
from fleet.cellsite import CellSiteConfig, generate, split_site, windows_with_labels
from fleet.data import (
    DEFAULT_PUBLIC_PLAYS,
    DetectionWindows,
    FederatedData,
    PackedTokens,
    encode_words,
    eligible,
    jsonl_clients,
    shakespeare_clients,
    split_client,
)
from fleet.rng import stream
from fleet.trainer import windows
from scenarios.errors import ScenarioError
from scenarios.schema import CellSiteSection, Scenario


def prepare_data(scenario: Scenario, tokenizer) -> FederatedData:
    d = scenario.data
    if d.source == "cellsite":
        return cellsite_data(d.cellsite, scenario.seed, tokenizer)
    if d.source == "shakespeare":
        clients = shakespeare_clients(list(d.public_plays or DEFAULT_PUBLIC_PLAYS), d.min_lines)
    elif d.source == "assistant":
        clients = [c for c in assistant_clients(d.assistant.owners, d.assistant.exchanges, scenario.seed)
                   if eligible(c.lines, d.min_lines)]
    else:
        clients = jsonl_clients(Path(d.path), d.min_lines)
    if not clients:
        raise ScenarioError(f"data: no client has {d.min_lines} lines or more (data.min_lines)")
    splits = [split_client(c, d.test_fraction, scenario.seed) for c in clients]
    # Generated transcripts repeat their words, which encode_words encodes once each.
    encode = encode_words if d.source == "assistant" else (lambda tok, texts: tok(texts)["input_ids"])
    train = encode(tokenizer, [s.train_text for s in splits])
    test = encode(tokenizer, [s.test_text for s in splits])
    train_packed = PackedTokens.pack(train)
    return FederatedData(
        client_ids=[s.client_id for s in splits],
        train=train_packed,
        test=PackedTokens.pack(test),
        num_samples=train_packed.lengths(),
    )


def cellsite_data(c: CellSiteSection, seed: int, tokenizer) -> FederatedData:
    """One data client per site, in time order: it trains on the site's past and holds out its last
    `test_days` days; labelled windows of those days, for a seeded sample of sites, are the detection test."""
    logs = generate(CellSiteConfig(sites=c.sites, days=c.days, period_min=c.period_min,
                                   fault_rate_per_day=c.fault_rate_per_day), seed)
    splits = [split_site(site, c.test_days) for site in logs.sites]
    train = PackedTokens.pack(encode_words(tokenizer, ["\n".join(past) + "\n" for past, _, _ in splits]))
    test = PackedTokens.pack(encode_words(tokenizer, ["\n".join(future) + "\n" for _, future, _ in splits]))
    windows = [windows_with_labels(future, labels, c.window_lines) for _, future, labels in splits]
    return FederatedData(client_ids=[site.site_id for site in logs.sites], train=train, test=test,
                         num_samples=train.lengths(), detection=detection_windows(windows, c, seed, tokenizer))


def detection_windows(windows: list[list[tuple[str, bool]]], c: CellSiteSection, seed: int,
                      tokenizer) -> DetectionWindows | None:
    """The windows each evaluated site's model scores: `c.eval_sites` sites drawn uniformly among those whose
    held-out days have both fault and normal windows, and of each site up to half of `c.windows_per_site`
    fault windows, the rest normal, drawn without replacement. None when no site has both."""
    faulty = [np.array([f for _, f in site], dtype=bool) for site in windows]
    mixed = [i for i, f in enumerate(faulty) if f.any() and not f.all()]
    if not mixed:
        return None
    sites = np.sort(stream(seed, "detection-sites").choice(mixed, min(c.eval_sites, len(mixed)), replace=False))
    picks = []
    for i in sites:
        rng, f = stream(seed, "detection-windows", int(i)), faulty[i]
        n_fault = min(int(f.sum()), c.windows_per_site // 2)
        n_normal = min(int((~f).sum()), c.windows_per_site - n_fault)
        picks.append(np.sort(np.concatenate([rng.choice(np.flatnonzero(f), n_fault, replace=False),
                                             rng.choice(np.flatnonzero(~f), n_normal, replace=False)])))
    texts = [windows[i][k][0] for i, pick in zip(sites, picks) for k in pick]
    return DetectionWindows(
        clients=sites,
        windows=PackedTokens.pack(encode_words(tokenizer, texts)),
        offsets=np.concatenate([[0], np.cumsum([len(p) for p in picks])]).astype(np.int64),
        faulty=np.concatenate([faulty[i][pick] for i, pick in zip(sites, picks)]),
    )


@functools.lru_cache(maxsize=1)
def _prepared_data(model_path: str, data_json: str, seed: int) -> FederatedData:
    scenario = Scenario.model_validate({"model": {"path": model_path}, "data": json.loads(data_json), "seed": seed})
    return prepare_data(scenario, load_tokenizer(model_path))


def client_data(scenario: Scenario) -> FederatedData:
    """The scenario's client data, tokenised once per process for runs that share model, data and seed
    (sweep trials, plan probes): tokenising takes seconds, and nothing downstream changes it."""
    return _prepared_data(scenario.model.path, scenario.data.model_dump_json(), scenario.seed)


def eval_windows(data: FederatedData, n: int, seq_len: int, seed: int) -> torch.Tensor:
    """n fixed held-out windows, one per client in a seeded order (cycling when n exceeds the clients).
    Clients whose held-out text is shorter than a window are skipped where possible: a window filled by
    repeating a short text would reward copying."""
    rng = stream(seed, "eval-windows")
    long_enough = np.flatnonzero(data.test.lengths() > seq_len)
    order = rng.permutation(long_enough if len(long_enough) else np.arange(len(data.test)))
    rows = [
        windows(data.test.get(int(order[i % len(order)])), rng.integers(0, 2**31, 1), seq_len + 1)
        for i in range(n)
    ]
    return torch.cat(rows)
