"""Fine-tune a cross-encoder reranker for one corpus, from (query, relevant document) pairs.

No cross-encoder checkpoint can be downloaded here, so training starts from the MiniLM encoder's
weights with a fresh one-logit head (as sentence-transformers' cross-encoder recipes do from a
plain BERT). Negatives are hard ones: the first-stage retriever's top hits for the query that
are not its document, so the model learns exactly the distinction the first stage gets wrong.
Loss: binary cross-entropy on the logit (label 1 for the document, 0 for each negative).

Each epoch ends with a checkpoint folder (`epoch-N/`); rerunning the same call resumes after
the last finished epoch. The result is a code-free transformers folder (safetensors, tokenizer)
that `{"type": "cross-encoder", "model": out}` loads.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel
from tqdm.auto import tqdm

from rag.errors import RagError
from rag.rerankers.base import passage_text
from rag.retrievers.base import Retriever
from rag.types import Hit, KnownItem


class TrainedReranker(BaseModel):
    folder: str
    pairs: int
    epochs: int
    resumed_from_epoch: int


def mine_pairs(queries: Sequence[KnownItem], retriever: Retriever, negatives: int = 3,
               depth: int = 20, max_words: int = 200) -> list[tuple[str, str, float]]:
    """(query, passage, label) triples: the relevant document's best-ranked chunk as positive
    (queries whose document the first stage misses within `depth` are skipped, as their text is
    unknown to it) and the top `negatives` chunks of other documents."""
    hits = retriever.search([q.query for q in queries], k=depth)
    triples = []
    for query, found in zip(queries, hits):
        positive = next((h for h in found if h.chunk.doc_id == query.gold), None)
        if positive is None:
            continue
        wrong: list[Hit] = [h for h in found if h.chunk.doc_id != query.gold][:negatives]
        triples.append((query.query, passage_text(positive, max_words), 1.0))
        triples += [(query.query, passage_text(h, max_words), 0.0) for h in wrong]
    return triples


def _last_epoch(out: Path) -> int:
    done = [int(p.name.split("-")[1]) for p in out.glob("epoch-*") if (p / "config.json").is_file()]
    return max(done, default=0)


def train_cross_encoder(
    queries: Sequence[KnownItem], retriever: Retriever, out: str | Path, base: str = "encoder",
    epochs: int = 1, negatives: int = 3, depth: int = 20, batch_size: int = 16, lr: float = 3e-5,
    max_length: int = 256, seed: int = 0, progress: bool = True,
) -> TrainedReranker:
    """Train (or resume training) a cross-encoder on `queries` with hard negatives from `retriever`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rag.models import resolve_model

    if not queries:
        raise RagError("train_cross_encoder needs at least one (query, gold) pair")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    triples = mine_pairs(queries, retriever, negatives, depth)
    if not triples:
        raise RagError(f"the first stage found none of the {len(queries)} training documents in its "
                       f"top {depth}: no positives to learn from")
    start = _last_epoch(out)
    source = out / f"epoch-{start}" if start else resolve_model(base)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(start + 1, epochs + 1):
        order = random.Random(seed + epoch).sample(triples, len(triples))
        model.train()
        batches = range(0, len(order), batch_size)
        for begin in tqdm(batches, desc=f"cross-encoder epoch {epoch}/{epochs}", disable=not progress):
            rows = order[begin : begin + batch_size]
            inputs = tokenizer([q for q, _, _ in rows], [p for _, p, _ in rows], padding=True,
                               truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(**inputs).logits.squeeze(-1)
            loss = loss_fn(logits, torch.tensor([y for _, _, y in rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        checkpoint = out / f"epoch-{epoch}"
        model.save_pretrained(checkpoint)
        tokenizer.save_pretrained(checkpoint)
    final = out / f"epoch-{max(epochs, start)}"
    for item in final.iterdir():  # the trained model at the folder's top level, loadable by path
        shutil.copy2(item, out / item.name)
    trained = TrainedReranker(folder=str(out), pairs=len(triples), epochs=epochs, resumed_from_epoch=start)
    (out / "training.json").write_text(json.dumps(trained.model_dump(), indent=2))
    return trained
