"""The one base of the errors a user can cause or fix.

A ``RagError``'s message is safe to show as is (no key, no traceback) and says what to do;
the CLI prints it after ``error:`` and the page shows it. Any other exception is a bug and is
left to surface as one.
"""

from __future__ import annotations


class RagError(Exception):
    """A problem the user can act on; ``str(error)`` is the one line to show."""
