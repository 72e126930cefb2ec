"""Ingestion: finding files, loading, chunking, embedding and writing; following a folder."""
