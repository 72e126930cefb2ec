"""Retrieval: dense, sentence and BM25 arms fused into one ranking."""
