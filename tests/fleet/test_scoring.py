"""Scoring windows of text by their loss, and encoding log text word by word: both against the plain
computation they replace."""

import numpy as np
import pytest
import torch

from fleet.base_model import load_tokenizer
from fleet.cellsite import CellSiteConfig, generate
from fleet.data import PackedTokens, encode_words
from fleet.trainer import LoraSpec
from tests.fleet.test_trainer import new_trainer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin")


@pytest.fixture(scope="module")
def log_lines():
    logs = generate(CellSiteConfig(sites=3, days=2, fault_rate_per_day=2.0, changes_per_day=2.0), seed=1)
    return [site.lines for site in logs.sites]


def test_window_scores_are_each_windows_own_loss(tokenizer, log_lines):
    trainer = new_trainer(LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"), bottleneck=8))
    adapter = 0.05 * torch.randn(trainer.layout.size, generator=torch.Generator().manual_seed(0))
    lines = log_lines[0][:7] + [line for line in log_lines[1] if "ALARM" in line or "CFG" in line][:3]
    texts = [np.asarray(tokenizer(line)["input_ids"]) for line in lines] + [np.array([5, 9])]
    assert len({len(t) for t in texts}) > 2  # lengths differ: batches are padded
    scores = trainer.score(adapter, texts, batch_size=4)
    alone = [trainer.evaluate(adapter, torch.from_numpy(t.astype(np.int64))[None, :]) for t in texts]
    np.testing.assert_allclose(scores, alone, rtol=1e-5)
    with pytest.raises(ValueError, match="two tokens"):
        trainer.score(adapter, [np.array([3])])


def test_log_text_encodes_word_by_word_as_the_tokenizer_does(tokenizer, log_lines):
    texts = ["\n".join(lines) + "\n" for lines in log_lines] + [log_lines[2][40]]
    mine = encode_words(tokenizer, texts)
    assert [ids.tolist() for ids in mine] == tokenizer(texts)["input_ids"]
    assert any("ALARM" in t for t in texts) and any("CFG" in t for t in texts)
    assert PackedTokens.pack(mine).get(3).tolist() == mine[3].tolist()


class WithEnd:
    """A tokenizer that ends every text with a token: encoding word by word would repeat it."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, texts, add_special_tokens=True):
        out = self.inner(texts, add_special_tokens=add_special_tokens)
        if add_special_tokens:
            ids = out["input_ids"]
            out["input_ids"] = [x + [0] for x in ids] if isinstance(texts, list) else ids + [0]
        return out


def test_a_tokenizer_that_disagrees_encodes_whole_texts(tokenizer, log_lines):
    odd = WithEnd(tokenizer)
    texts = ["\n".join(lines[:20]) for lines in log_lines]
    assert [ids.tolist() for ids in encode_words(odd, texts)] == odd(texts)["input_ids"]
