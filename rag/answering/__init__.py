"""Answering: the extractive answer, the answer decision, LLM answers and their citations."""
