"""Training the answer verifier (``python -m training.data``, ``python -m training.verifier``)."""
