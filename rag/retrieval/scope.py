"""Which workspaces one question, viewer or API call may read: a Chroma ``where`` and the
same rule as a Python predicate over a record's metadata.

Invariants:
- Every retrieval arm applies the scope inside its search, before its top-k (the dense
  arms pass ``where`` to Chroma's query, the BM25 arm masks its scores with ``admits``):
  a scoped question still gets k results when its workspaces hold them, and nothing from
  another workspace ever ranks.
- ``where`` and ``admits`` select the same records. A record without a ``workspace`` key
  (indexed before workspaces existed) is in ``DEFAULT_WORKSPACE``; Chroma has no test for a
  missing key, so a scope that reads the default workspace excludes the others by name
  (``$nin``: a missing key matches it), and ``others`` must then name every other
  workspace that holds documents (``rag.accounts.workspaces`` lists them; removing a
  workspace removes its documents first).
- A scope of the default workspace when no other workspace exists has no ``where`` at all:
  the single-user case without workspaces searches exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag.config import DEFAULT_WORKSPACE
from rag.index.records import WORKSPACE_KEY


@dataclass(frozen=True)
class Scope:
    """The workspaces that may be read (``readable``) and every other one (``others``)."""

    readable: frozenset[str]
    others: frozenset[str] = frozenset()

    @classmethod
    def of(cls, readable: set[str] | frozenset[str], every: set[str] | frozenset[str]) -> Scope:
        """The scope reading ``readable`` among ``every`` workspace that exists."""
        readable = frozenset(readable)
        return cls(readable, frozenset(every) - readable - {DEFAULT_WORKSPACE})

    @property
    def where(self) -> dict[str, Any] | None:
        """The Chroma ``where`` of this scope (None: nothing to exclude)."""
        if DEFAULT_WORKSPACE in self.readable:
            if not self.others:
                return None
            return {WORKSPACE_KEY: {"$nin": sorted(self.others)}}
        return {WORKSPACE_KEY: {"$in": sorted(self.readable)}}

    def allows_workspace(self, workspace: str | None) -> bool:
        """Whether a record in ``workspace`` (None: no key) is in scope, as ``where`` says."""
        if DEFAULT_WORKSPACE in self.readable:
            return workspace not in self.others
        return workspace in self.readable

    def admits(self, meta: dict[str, Any]) -> bool:
        """``where`` as a predicate over a record's metadata."""
        return self.allows_workspace(meta.get(WORKSPACE_KEY))


def where_of(scope: Scope | None) -> dict[str, Any] | None:
    """``scope``'s ``where``; None for no scope (every workspace: evaluation, benchmarks)."""
    return scope.where if scope is not None else None
