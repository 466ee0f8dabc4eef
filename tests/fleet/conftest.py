"""Client texts shared by the trainer tests: four clients of different lengths, tokenised by the built-in model."""

import numpy as np
import pytest

from fleet.base_model import load_tokenizer


@pytest.fixture(scope="module")
def texts():
    tok = load_tokenizer("builtin")
    lines = ["Now is the winter of our discontent", "Made glorious summer by this sun of York;",
             "And all the clouds that lour'd upon our house", "In the deep bosom of the ocean buried."]
    return [np.asarray(tok((line + "\n") * (12 + 3 * i))["input_ids"], dtype=np.int32) for i, line in enumerate(lines)]
