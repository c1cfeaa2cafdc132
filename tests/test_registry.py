"""Nested components: built once by the `Component` base from a declared map of field to kind,
their real specs kept in the config, live specs in `spec()`."""

from __future__ import annotations

import pytest

from rag.compression.stage import Compress
from rag.errors import ConfigError, RagError
from rag.pipeline import Pipeline
from rag.registry import build
from rag.retrievers.bm25 import BM25Retriever
from rag.retrievers.fusion import HybridRetriever
from rag.retrievers.stage import Retrieve
from rag.selectors.stage import Select
from rag.types import Chunk

CHUNKS = [Chunk(id=f"d{i}#0", doc_id=f"d{i}", text=text, start=0, end=len(text))
          for i, text in enumerate(["the red fox jumps", "a blue whale sings", "green tea leaves"])]


def test_the_config_holds_each_nested_spec_not_a_stub():
    spec = {"type": "hybrid", "method": "convex",
            "retrievers": [{"type": "bm25", "k1": 1.2}, {"type": "bm25", "b": 0.5}]}
    stage = Retrieve(spec, 2)  # positional arguments fill the config's fields in order
    assert stage.config.retriever["retrievers"][0]["k1"] == 1.2
    assert stage.config.retriever["retrievers"][1]["b"] == 0.5
    assert [r.config.k1 for r in stage.retriever.retrievers] == [1.2, 1.5]
    rebuilt = build("stage", {"type": "retrieve", **stage.config.model_dump(mode="json")})
    assert rebuilt.retriever.config == stage.retriever.config
    assert rebuilt.config == stage.config


def test_a_component_given_built_is_kept_and_its_spec_recorded():
    bm25 = BM25Retriever(k1=1.1)
    stage = Retrieve(bm25, k=2)
    assert stage.retriever is bm25 and stage.config.retriever == bm25.spec()
    bm25.index(CHUNKS)  # in memory only: no spec a file could rebuild, so its config stands in
    assert Retrieve(bm25).config.retriever == {"type": "bm25", **bm25.config.model_dump(mode="json")}
    hybrid = HybridRetriever([bm25, {"type": "bm25"}])
    assert hybrid.retrievers[0] is bm25 and hybrid.config.retrievers[1]["type"] == "bm25"
    with pytest.raises(ConfigError, match="both by position and by name"):
        Retrieve(bm25, retriever=bm25)
    with pytest.raises(ConfigError, match="expected a retriever"):
        Retrieve(build("selector", "bm25"))


def test_an_index_saved_after_construction_is_named_by_its_folder(tmp_path):
    bm25 = BM25Retriever()
    bm25.index(CHUNKS)
    pipeline = Pipeline([Retrieve(bm25, k=1)])
    with pytest.raises(RagError, match="lives only in memory"):
        pipeline.to_dict()
    bm25.save(tmp_path / "idx")
    assert pipeline.to_dict()["stages"][0]["retriever"]["path"] == str(tmp_path / "idx")
    pipeline.save(tmp_path / "p.yaml")
    loaded = Pipeline.load(tmp_path / "p.yaml")
    assert loaded.to_dict() == pipeline.to_dict()
    (state,) = loaded.run(["which animal sings?"])
    assert [h.chunk.id for h in state.hits] == ["d1#0"]


def test_shared_kinds_stay_shared_across_nested_components(encoder):
    select, compress = Select({"type": "knn"}), Compress({"type": "extractive"})
    assert select.selector.encoder is encoder
    assert compress.compressor.encoder is encoder
    assert compress.compressor.config.encoder == {"type": "sentence_transformers"}


def test_nested_defaults_and_checks_come_from_the_config():
    code = build("compressor", {"type": "code", "ratio": 3.0, "fallback": {"type": "code"}})
    assert code.fallback.config.ratio == 3.0  # the fallback inherits the ratio it was not given
    assert code.config.fallback == {"type": "code", "ratio": 3.0}
    assert build("stage", {"type": "ground"}).generator is None
    with pytest.raises(ConfigError, match="generated checks need a `generator`"):
        build("stage", {"type": "execute", "checks": ["generated"]})
