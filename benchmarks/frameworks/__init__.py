"""The peer frameworks' QA pipelines that benchmarks/peers.py runs beside rag-icl."""
