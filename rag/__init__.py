"""Cited question answering over a folder of documents (see README)."""
