"""Helpers of the chat page that do not import Streamlit (rendering document text safely)."""
