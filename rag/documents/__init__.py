"""Documents: reading every supported format into text, and locating cited spans in it."""
