"""KV-cache precomputation: chunk caches reused at query time, and vLLM prefix caching."""

from rag.kvcache.reuse import ChunkKV, Frame, Layout, Mode
from rag.kvcache.store import ChunkKVStore

__all__ = ["ChunkKV", "ChunkKVStore", "Frame", "Layout", "Mode"]
