"""rag-icl: retrieval-augmented generation and in-context learning pipelines."""
__version__ = "0.1.0"
