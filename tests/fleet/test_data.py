"""The natural partition of the plays, and user JSONL data."""

import json

import pytest

from fleet.data import DEFAULT_PUBLIC_PLAYS, jsonl_clients, read_play, shakespeare_clients, split_client


@pytest.fixture(scope="module")
def clients():
    return shakespeare_clients(list(DEFAULT_PUBLIC_PLAYS), min_lines=16)


def test_one_client_per_play_and_role(clients):
    ids = [c.client_id for c in clients]
    assert len(ids) == len(set(ids)) and len(ids) > 500
    assert "othello/IAGO" in ids


def test_public_plays_belong_to_no_client(clients):
    plays = {c.client_id.split("/")[0] for c in clients}
    assert plays.isdisjoint(DEFAULT_PUBLIC_PLAYS)
    assert len(plays) == 38 - len(DEFAULT_PUBLIC_PLAYS)


def test_no_test_line_appears_in_training_text(clients):
    for client in clients:
        split = split_client(client, 0.2, seed=0)
        assert split.train_lines and split.test_lines
        assert not set(split.test_lines) & set(split.train_lines), client.client_id


def test_split_keeps_every_line_once_except_duplicates(clients):
    client = next(c for c in clients if c.client_id == "othello/IAGO")
    split = split_client(client, 0.2, seed=0)
    all_lines = [line for speech in client.lines for line in speech]
    assert len(split.train_lines) + len(split.test_lines) <= len(all_lines)
    assert set(split.train_lines) | set(split.test_lines) == set(all_lines)


def test_split_is_seeded(clients):
    c = clients[3]
    assert split_client(c, 0.2, 0) == split_client(c, 0.2, 0)
    assert split_client(c, 0.2, 0) != split_client(c, 0.2, 1)


def test_parser_reads_speeches():
    roles = read_play("macbeth")
    assert roles["First Witch"][0] == ["When shall we three meet again", "In thunder, lightning, or in rain?"]


def test_jsonl_clients(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"client_id": "a", "text": f"line {i}\nmore {i}"} for i in range(5)] + [{"client_id": 7, "text": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    clients = jsonl_clients(path, min_lines=4)
    assert [c.client_id for c in clients] == ["a"]
    assert len(clients[0].lines) == 5


def test_jsonl_bad_line_is_reported(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"client_id": "a", "text": "ok"}\n{"client_id": "b"}\n')
    with pytest.raises(ValueError, match="d.jsonl:2"):
        jsonl_clients(path, min_lines=1)
