"""Dense retrieval in Milvus: an embedded `milvus-lite` store in the index folder, or a cluster.

For users who outgrow one hnswlib file. The same `MilvusClient` code talks to the embedded engine
(a folder, used by tests and single machines) and to a Milvus server or cluster (`uri`), so a
pipeline moves from one to the other by changing one field. The collection holds each chunk's
id, vector (HNSW index, cosine or inner product), the chunk itself as JSON, and a JSON field of
what filters can name (the chunk's metadata plus `doc_id` and `title`); filters become Milvus
boolean expressions and are applied inside the search, so k matches come back when k exist.

The index folder holds `manifest.json` (format, encoder spec and fingerprint, collection, size)
and, for the embedded engine, the store itself (`milvus.db/`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from rag.encoders.dense import Encoder, index_encoder
from rag.errors import IndexLoadError, RagError
from rag.registry import ComponentConfig, register
from rag.retrievers.base import (
    Filter,
    Retriever,
    check_deletable,
    check_index_encoder,
    check_k,
    check_new_ids,
    embed_text,
    read_manifest,
    write_manifest,
)
from rag.retrievers.filters import (
    ExactBelow,
    Logic,
    MetadataFilter,
    metadata_key,
    parse_filter,
    select,
)
from rag.retrievers.hnsw import exact_top_k
from rag.types import Chunk, Hit

FORMAT = "rag-icl/milvus-v1"
STORE = "milvus.db"
DEFAULT_ENCODER = {"type": "sentence_transformers"}
METRICS = {"cosine": "COSINE", "ip": "IP"}
MAX_ID, MAX_JSON = 512, 65_535  # VARCHAR limits of the id and chunk fields


def filter_expression(filter: Filter | None) -> str:
    """A Milvus boolean expression for a filter. Each comparison first asks that the key exist,
    so a chunk without it is false, not null, and `NOT` matches it as in the other indexes;
    `in` becomes an `or` of equalities (milvus-lite's `in` takes only plain fields). Values are
    JSON literals, so quotes inside them cannot end the string."""
    node = parse_filter(filter)
    return "" if node is None else _expression(node)


def _expression(node: MetadataFilter) -> str:
    if isinstance(node, Logic):
        joiner = " or " if node.operator == "OR" else " and "
        joined = "(" + joiner.join(_expression(c) for c in node.conditions) + ")"
        return f"not {joined}" if node.operator == "NOT" else joined
    path = f"filterable[{json.dumps(metadata_key(node.field), ensure_ascii=False)}]"
    if isinstance(node.value, list):
        test = " or ".join(f"{path} == {json.dumps(v, ensure_ascii=False)}" for v in node.value)
        test = f"({test or 'false'})" if node.operator == "in" else f"not ({test or 'false'})"
    else:
        test = f"{path} {node.operator} {json.dumps(node.value, ensure_ascii=False)}"
    return f"(exists {path} and {test})"


def id_expression(ids: Sequence[str]) -> str:
    """`id in [...]` with JSON string literals (the client's own quoting breaks on apostrophes)."""
    return f"id in {json.dumps(list(ids), ensure_ascii=False)}"


@register("retriever", "milvus")
class MilvusRetriever(Retriever):
    """Approximate nearest neighbours in a Milvus collection (HNSW), embedded or on a server."""

    format = FORMAT
    nested = {"encoder": "encoder"}

    class Config(ComponentConfig):
        path: str | None = Field(default=None, description="index folder to load; None: empty")
        uri: str | None = Field(default=None, description="a Milvus server, e.g. http://host:19530; "
                                                          "None: the embedded store in the folder")
        collection: str = "chunks"
        encoder: dict[str, Any] | None = Field(
            default=None, description="encoder spec; None: the one the index was built with")
        space: Literal["cosine", "ip"] = "cosine"
        M: int = Field(default=16, ge=2, description="graph degree")
        ef_construction: int = Field(default=200, ge=1)
        ef_search: int = Field(default=64, ge=1, description="raised to k when k is larger")
        exact_below: ExactBelow = 0.01

    config: Config
    encoder: Encoder

    def __init__(self, encoder: Encoder | dict[str, Any] | None = None, **kwargs: Any) -> None:
        manifest = read_manifest(kwargs["path"], FORMAT) if kwargs.get("path") else None
        if manifest is not None:
            for key in ("space", "collection", "uri"):
                kwargs.setdefault(key, manifest[key])
            chosen = index_encoder(encoder, manifest["encoder"])
        else:
            chosen = encoder if encoder is not None else DEFAULT_ENCODER
        super().__init__(encoder=chosen, **kwargs)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._filterable: list[Chunk] | None = None  # read once per change, for filter checks
        if manifest is None:
            # an empty index keeps its store in a scratch folder (removed with the retriever)
            # until `save` names one
            self._scratch = tempfile.TemporaryDirectory(prefix="rag-milvus-")
            self._store = Path(self._scratch.name) / STORE
            self._create()
        else:
            self._open(Path(kwargs["path"]), manifest)

    # ---- the store ------------------------------------------------------------------------

    def _client(self, store: Path) -> Any:
        from pymilvus import MilvusClient

        return MilvusClient(self.config.uri or str(store))

    def _create(self) -> None:
        from pymilvus import DataType

        self.client = self._client(self._store)
        name = self.config.collection
        if self.client.has_collection(name):
            raise RagError(f"collection {name!r} already exists at {self.config.uri}; "
                           "load its index folder or choose another collection")
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("chunk", DataType.VARCHAR, max_length=MAX_JSON)
        schema.add_field("filterable", DataType.JSON)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vector", index_type="HNSW", metric_type=METRICS[self.config.space],
                        params={"M": self.config.M, "efConstruction": self.config.ef_construction})
        self.client.create_collection(name, schema=schema, index_params=index)

    def _open(self, folder: Path, manifest: dict[str, Any]) -> None:
        check_index_encoder(folder, manifest, self.encoder)
        self._store = folder / STORE
        if not self.config.uri and not self._store.is_dir():
            raise IndexLoadError(f"{self._store} is missing: the folder holds no milvus store")
        try:
            self.client = self._client(self._store)
            if not self.client.has_collection(self.config.collection):
                raise IndexLoadError(f"{self.config.uri or self._store} has no collection "
                                     f"{self.config.collection!r}")
            self.client.load_collection(self.config.collection)
            count = len(self)
        except IndexLoadError:
            raise
        except Exception as exc:  # the store's own errors, from a damaged or foreign folder
            raise IndexLoadError(f"{self.config.uri or self._store}: cannot open the milvus "
                                 f"store ({exc})") from exc
        if count != manifest["count"]:
            raise IndexLoadError(f"{self.config.uri or self._store} holds {count} chunks, "
                                 f"manifest says {manifest['count']}")

    @cached_property
    def dim(self) -> int:
        return self.encoder.dim

    def __len__(self) -> int:
        return int(self.client.get_collection_stats(self.config.collection)["row_count"])

    def _present(self, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.client.query(self.config.collection, filter=id_expression(ids), output_fields=["id"])
        return {row["id"] for row in rows}

    # ---- contents -------------------------------------------------------------------------

    def index(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        self.client.drop_collection(self.config.collection)
        self._create()
        self._filterable = None
        self.add(chunks, progress)

    def add(self, chunks: Sequence[Chunk], progress: bool = False) -> None:
        chunks = list(chunks)
        if chunks:
            vectors = self.encoder.encode_documents([embed_text(c) for c in chunks], progress=progress)
            self.add_vectors(chunks, vectors)

    def add_vectors(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        """Add chunks whose vectors were computed elsewhere (late chunking, situated, ...)."""
        if vectors.shape != (len(chunks), self.dim):
            raise RagError(f"expected vectors of shape {(len(chunks), self.dim)}, got {vectors.shape}")
        check_new_ids(self._present([c.id for c in chunks]), chunks)
        long = [c.id for c in chunks if len(c.id.encode()) > MAX_ID]
        if long:
            raise RagError(f"milvus ids hold at most {MAX_ID} bytes: {long[:3]}")
        rows = [{"id": c.id, "vector": v.tolist(), "chunk": c.model_dump_json(),
                 "filterable": {**c.metadata, "doc_id": c.doc_id, "title": c.title}}
                for c, v in zip(chunks, np.asarray(vectors, dtype=np.float32))]
        self.client.insert(self.config.collection, rows)
        self._unsaved, self._filterable = True, None

    def delete(self, ids: Sequence[str]) -> None:
        check_deletable(self._present(ids), ids)
        self.client.delete(self.config.collection, filter=id_expression(ids))
        self._unsaved, self._filterable = True, None

    def search(self, queries: Sequence[str], k: int = 10, filter: Filter | None = None) -> list[list[Hit]]:
        check_k(k)
        return self.search_vectors(self.encoder.encode_queries(list(queries)), k, filter)

    def search_vectors(self, vectors: np.ndarray, k: int = 10, filter: Filter | None = None,
                       ) -> list[list[Hit]]:
        """Nearest chunks to query vectors made by this index's encoder."""
        check_k(k)
        if not len(vectors):
            return []
        node = parse_filter(filter)
        if node is not None and len(self):
            rows = self._filterable_rows()
            ids = [row.id for row, ok in zip(rows, select(rows, node)) if ok]
            if len(ids) < self.config.exact_below * len(rows):
                return self._exact(vectors, k, ids)
        found = self.client.search(
            self.config.collection, data=np.asarray(vectors, dtype=np.float32).tolist(), limit=k,
            filter=filter_expression(node), output_fields=["chunk"],
            search_params={"params": {"ef": max(self.config.ef_search, k)}})
        return [[Hit(chunk=Chunk.model_validate_json(hit["entity"]["chunk"]),
                     score=float(hit["distance"]), retriever=self.name) for hit in row]
                for row in found]

    def _exact(self, vectors: np.ndarray, k: int, ids: list[str]) -> list[list[Hit]]:
        """Exact search over a few chunks: their stored vectors, scored here."""
        if not ids:
            return [[] for _ in vectors]
        rows = self.client.query(self.config.collection, filter=id_expression(ids),
                                 output_fields=["vector", "chunk"])
        stored = np.array([row["vector"] for row in rows], dtype=np.float32)
        top, sims = exact_top_k(vectors, stored, min(k, len(rows)), self.config.space)
        return [[Hit(chunk=Chunk.model_validate_json(rows[i]["chunk"]), score=float(s),
                     retriever=self.name) for i, s in zip(row_top, row_sims)]
                for row_top, row_sims in zip(top, sims)]

    def _filterable_rows(self) -> list[Chunk]:
        """Stand-in chunks holding what filters can name, read from the collection once per
        change, so a filter is checked against this index's fields as in the other indexes."""
        if self._filterable is None:
            rows: list[dict[str, Any]] = []
            pages = self.client.query_iterator(self.config.collection, batch_size=4096,
                                               filter="", output_fields=["filterable"])
            while page := pages.next():
                rows.extend(page)
            pages.close()
            self._filterable = [Chunk.model_construct(id=r["id"], doc_id=r["filterable"]["doc_id"],
                                                      title=r["filterable"]["title"],
                                                      metadata=r["filterable"]) for r in rows]
        return self._filterable

    # ---- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the manifest; the embedded store moves into the folder if it lives elsewhere
        (a server keeps its own data)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / STORE
        if not self.config.uri and target.resolve() != self._store.resolve():
            from milvus_lite.server_manager import server_manager_instance

            self.client.close()
            server_manager_instance.release_server(str(self._store))  # flushed and closed
            scratch = folder / f".{STORE}.partial"
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.copytree(self._store, scratch)
            shutil.rmtree(target, ignore_errors=True)
            scratch.rename(target)
            self._store = target
            if self._scratch is not None:
                self._scratch.cleanup()
                self._scratch = None
            self.client = self._client(target)
            self.client.load_collection(self.config.collection)
        write_manifest(folder, FORMAT, {
            "encoder": self.encoder.pinned_spec(), "encoder_fingerprint": self.encoder.fingerprint,
            "uri": self.config.uri, "collection": self.config.collection, "space": self.config.space,
            "dim": self.dim, "count": len(self),
        })
        self.config.path = str(folder)
        self._unsaved = False
