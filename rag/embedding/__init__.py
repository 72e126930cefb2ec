"""Embedding models: the bundled multilingual-e5-small on ONNX Runtime, a remote server, a fake."""
