"""The index: the vector store (Chroma, embedded or server), the BM25 lexical index."""
