"""The dynamic batcher on the real all-MiniLM-L6-v2 encoder: sentences of different lengths,
submitted concurrently, are padded along the sequence axis into merged runs whose outputs match
each sentence's own unpadded run; without a padding config, different lengths never merge."""
from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

import ember
from ember.embed import find_st_folder
from ember.serve.batcher import DynamicBatcher
from ember.serve.config import BatchingConfig, PaddingConfig

pytestmark = pytest.mark.timeout(300)

TEXTS = [
    "Hello!",
    "The quick brown fox jumps over the lazy dog.",
    "ember runs ONNX graphs.",
    "Paris is the capital of France; Berlin is the capital of Germany, and Rome of Italy.",
    "Numbers like 3.14159 and 2.71828 split into several word pieces.",
    "A sentence embedding maps text to a point in space.",
    "Unbelievably, WordPiece handles uncommon words by splitting them into known pieces, "
    "one by one.",
    "Short one.",
]


@pytest.fixture(scope="module")
def engine():
    return ember.Engine("minilm-l6", threads=2)


@pytest.fixture(scope="module")
def feeds():
    tokenizers = pytest.importorskip("tokenizers")
    path = os.path.join(find_st_folder("minilm-l6"), "tokenizer.json")
    tok = tokenizers.Tokenizer.from_file(path)
    tok.no_padding()                                # the file pads to 128: we want own lengths
    out = []
    for e in tok.encode_batch(TEXTS):
        out.append({"input_ids": np.array([e.ids], np.int64),
                    "attention_mask": np.array([e.attention_mask], np.int64),
                    "token_type_ids": np.array([e.type_ids], np.int64)})
    lengths = [f["input_ids"].shape[1] for f in out]
    assert len(set(lengths)) == len(lengths), f"want distinct lengths, got {lengths}"
    return out


def _submit_all(engine, feeds, config):
    async def main():
        seen = []
        b = DynamicBatcher(engine.run, engine.inputs, engine.outputs, config,
                           on_batch=lambda rows, reqs: seen.append((rows, reqs)))
        results = await asyncio.gather(*(b.submit(f) for f in feeds))
        await b.close()
        return [r for r, _ in results], seen
    return asyncio.run(main())


def test_padded_batches_match_solo_runs(engine, feeds):
    pad = PaddingConfig(axis=1, mask_input="attention_mask")
    merged, seen = _submit_all(engine, feeds, BatchingConfig(8, 50.0, pad))
    assert max(rows for rows, _ in seen) > 1, seen
    for f, got in zip(feeds, merged):
        want = engine.run(f)
        n = f["input_ids"].shape[1]
        assert got["last_hidden_state"].shape == (1, n, 384)      # sliced back to its own length
        assert got["sentence_embedding"].shape == (1, 384)
        # allclose, not bit-exact: a padded row's masked softmax sums over more (zero-weight)
        # columns and its matmuls run at another length, which may round differently. (Today's
        # CPU kernels happen to give the same bits; nothing promises that.)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_without_padding_different_lengths_do_not_merge(engine, feeds):
    merged, seen = _submit_all(engine, feeds, BatchingConfig(8, 50.0))
    assert seen == [(1, 1)] * len(feeds)
    for f, got in zip(feeds, merged):
        want = engine.run(f)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
