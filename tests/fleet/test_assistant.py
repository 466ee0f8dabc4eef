"""Generated phone-assistant transcripts: reproducible per owner, personal in what a shared model cannot know,
and a domain the built-in model has not seen."""

import re

import numpy as np
import torch

from fleet.assistant import REQUESTS, assistant_clients, clock, owner
from fleet.base_model import load_base_model, load_tokenizer
from fleet.data import DEFAULT_PUBLIC_PLAYS, shakespeare_clients
from fleet.model_files import resolve_model_path


def test_an_owner_depends_on_the_seed_and_their_index_only():
    few, many = assistant_clients(3, 20, seed=5), assistant_clients(50, 20, seed=5)
    assert few == many[:3]
    assert assistant_clients(3, 20, seed=6) != few


def test_clock_formats():
    # 7:05 in the morning and 19:30 in the evening, read both ways
    assert clock(7 * 60 + 5, clock_24h=True) == "07:05" and clock(7 * 60 + 5, clock_24h=False) == "7:05 am"
    assert clock(19 * 60 + 30, clock_24h=False) == "7:30 pm" and clock(0, clock_24h=False) == "12:00 am"


def test_an_owners_contacts_answer_for_their_relations():
    """'text my sister' is answered with the name of this owner's sister: a fact only their own data holds."""
    for i in range(20):
        who = owner(0, i)
        client = assistant_clients(i + 1, 200, seed=0)[i]
        for request, answer in client.lines:
            found = re.search(r"my (\w+)", request)
            if found and found.group(1) in who.contacts and "call" not in request and "remind" not in request:
                assert who.contacts[found.group(1)] in answer, (request, answer)


def test_owners_differ_in_habits():
    owners = [owner(0, i) for i in range(200)]
    # about half read 24-hour times, most Celsius, all three tones present; each intent's phrasing varies
    assert 0.35 < np.mean([o.clock_24h for o in owners]) < 0.65
    assert 0.55 < np.mean([o.celsius for o in owners]) < 0.85
    assert {o.tone for o in owners} == {0, 1, 2}
    for intent, forms in REQUESTS.items():
        assert len({k for o in owners for k in o.phrasings[intent]}) == len(forms)


def test_the_domain_is_new_to_the_built_in_model():
    """The base model predicts the transcripts far worse than held-out Shakespeare it was not trained on."""
    path = resolve_model_path("builtin")
    tokenizer, model = load_tokenizer(path), load_base_model(path).eval()

    def loss(text: str) -> float:
        ids = torch.tensor([tokenizer(text)["input_ids"][:2048]])
        windows = ids[0, : ids.shape[1] // 128 * 128].view(-1, 128)
        with torch.no_grad():
            return float(model(windows, labels=windows).loss)

    transcripts = "\n".join(line for c in assistant_clients(20, 20, seed=0) for ex in c.lines for line in ex)
    plays = "\n".join(line for c in shakespeare_clients(list(DEFAULT_PUBLIC_PLAYS), 16)[:20]
                      for speech in c.lines for line in speech)
    assert loss(transcripts) > 1.5 * loss(plays)
