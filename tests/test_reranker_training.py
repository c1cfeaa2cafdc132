"""Training a cross-encoder for a corpus: hard negatives, per-epoch checkpoints, resume, loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import ModelLoadError
from rag.eval.datasets import known_items
from rag.recipes import document_chunks
from rag.registry import build
from rag.rerankers.base import passage_text
from rag.rerankers.training import group_scores, mine_groups, train_cross_encoder
from rag.retrievers import BM25Retriever
from rag.types import KnownItem


def test_the_training_split_holds_no_dev_or_test_query_or_article() -> None:
    train = known_items("train")
    held = known_items("dev") + known_items("test")
    assert len(train) > 5000
    assert not {i.gold for i in train} & {i.gold for i in held}
    assert not {i.query for i in train} & {i.query for i in held}


@pytest.fixture(scope="module")
def corpus(vital_slice):
    bm25 = BM25Retriever()
    bm25.index(document_chunks(vital_slice))
    queries = [KnownItem(query=d.metadata["description"], gold=d.id)
               for d in vital_slice if d.metadata.get("description")][:24]
    return bm25, queries


def test_mined_negatives_are_first_stage_hits_of_other_documents(corpus) -> None:
    bm25, queries = corpus
    groups = mine_groups(queries, bm25, negatives=2, depth=10)
    hits = dict(zip([q.query for q in queries], bm25.search([q.query for q in queries], k=10)))
    gold = {q.query: q.gold for q in queries}
    assert len(groups) >= len(queries) // 2
    for group in groups:
        shown = {passage_text(h, 100): h.chunk.doc_id for h in hits[group.query]}
        assert shown[group.positive] == gold[group.query]  # the positive is the query's document
        assert len(group.negatives) == 2  # and every negative a first-stage hit of another one
        assert all(shown[p] != gold[group.query] for p in group.negatives)


def test_training_lowers_the_loss_and_ranks_positives_higher(corpus, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    bm25, queries = corpus
    groups = mine_groups(queries, bm25, negatives=3, depth=10)

    def positive_rank(folder: Path) -> float:
        """Mean rank (0 = first) of the positive within its group, under the model in `folder`."""
        torch.manual_seed(0)  # the same fresh head for the untrained model
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
        with torch.inference_mode():
            scores = group_scores(model, AutoTokenizer.from_pretrained(folder), groups, 96)
        return (scores > scores[:, :1]).sum(dim=1).float().mean().item()

    from rag.models import resolve_model

    before = positive_rank(resolve_model("encoder"))
    trained = train_cross_encoder(queries, bm25, tmp_path / "r", epochs=3, negatives=3, depth=10,
                                  lr=5e-5, max_length=96, progress=False)
    assert trained.epoch_losses[-1] < trained.epoch_losses[0]
    assert positive_rank(tmp_path / "r") < before - 0.5


def test_training_checkpoints_each_epoch_resumes_and_loads_as_a_reranker(corpus, tmp_path: Path) -> None:
    bm25, queries = corpus
    out = tmp_path / "reranker"
    first = train_cross_encoder(queries, bm25, out, epochs=1, negatives=2, depth=10, max_length=96,
                                progress=False)
    assert first.resumed_from_epoch == 0 and (out / "epoch-1" / "model.safetensors").is_file()
    second = train_cross_encoder(queries, bm25, out, epochs=2, negatives=2, depth=10, max_length=96,
                                 progress=False)
    assert second.resumed_from_epoch == 1 and (out / "epoch-2" / "model.safetensors").is_file()
    assert len(second.epoch_losses) == 2 and second.epoch_losses[0] == first.epoch_losses[0]
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # code-free weights only
    reranker = build("reranker", {"type": "cross-encoder", "model": str(out)})
    assert reranker.max_words == second.max_words == 100  # reads passages as training did
    assert reranker.model.max_seq_length == 96
    first_stage = bm25.search([q.query for q in queries], k=10)
    reranked = reranker.rerank([q.query for q in queries], first_stage)
    assert [sorted(h.chunk.id for h in r) for r in reranked] == [sorted(h.chunk.id for h in f) for f in first_stage]
    assert all(r[i].score >= r[i + 1].score for r in reranked for i in range(len(r) - 1))


def test_a_damaged_reranker_folder_gives_a_named_error(corpus, tmp_path: Path) -> None:
    bm25, queries = corpus
    out = tmp_path / "reranker"
    train_cross_encoder(queries[:8], bm25, out, epochs=1, negatives=2, depth=10, max_length=64,
                        progress=False)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        build("reranker", {"type": "cross-encoder", "model": str(out)}).model
    (out / "training.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="training.json is damaged"):
        build("reranker", {"type": "cross-encoder", "model": str(out)}).max_words
