"""Uploaded files (name, bytes) saved where an ingest can read them, and nowhere else.

Invariant: an upload is written only inside its folder, under a sanitised base name of at
most ``_UPLOAD_NAME_MAX`` bytes (file systems allow 255), written beside and renamed, so a
planted symlink is replaced rather than written through and a half-written file is never
indexed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rag.documents.formats import SUPPORTED_LABEL, SUPPORTED_SUFFIXES
from rag.ingest.files import Failure, IngestError, too_large

if TYPE_CHECKING:
    from rag.ingest.pipeline import IngestReport

_UPLOAD_NAME_MAX = 200


def safe_upload_path(folder: Path, name: str) -> Path:
    """Where an uploaded file may be saved: its base name only, inside ``folder``.

    ``../../etc/passwd`` becomes ``folder/passwd``; names that reduce to nothing or to a
    hidden file are refused, so an upload can never write outside the upload folder.
    """
    base = re.sub(r"[^\w.\- ]", "_", Path(name.replace("\\", "/")).name).strip(" .")
    if not base:
        raise IngestError(f"{name!r}: not a usable file name")
    stem, suffix = os.path.splitext(base)
    if len(base.encode()) > _UPLOAD_NAME_MAX:  # file systems allow 255 bytes per name
        keep = _UPLOAD_NAME_MAX - len(suffix.encode())
        base = stem.encode()[:keep].decode(errors="ignore").rstrip(" .") + suffix
    return folder / base


def save_uploads(
    folder: Path, uploads: list[tuple[str, bytes]], max_file_mb: float | None
) -> tuple[list[Path], list[Failure]]:
    """Save uploaded files (name, bytes) under ``folder``: the paths saved, and the failures.

    Names are reduced to a safe base name (``safe_upload_path``); unsupported types and files
    over the size limit are refused before anything is written.
    """
    saved: list[Path] = []
    failed: list[Failure] = []
    for name, data in uploads:
        try:
            saved.append(save_upload(folder, name, data, max_file_mb))
        except IngestError as exc:
            failed.append(Failure(name, str(exc).removeprefix(f"{name}: ")))
        except OSError as exc:
            failed.append(Failure(name, f"cannot save ({exc.strerror or exc})"))
    return saved, failed


def save_upload(folder: Path, name: str, data: bytes, max_file_mb: float | None) -> Path:
    """Write one upload where ``safe_upload_path`` says, or raise ``IngestError`` saying why.

    Written beside, then renamed: a symlink planted at the target is replaced, never written
    through, and a half-written upload is never indexed.
    """
    path = safe_upload_path(folder, name)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise IngestError(f"{name}: unsupported file type (supported: {SUPPORTED_LABEL})")
    reason = too_large(len(data), max_file_mb)
    if reason:
        raise IngestError(f"{name}: {reason}")
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path


def ingest_uploads(
    folder: Path,
    uploads: list[tuple[str, bytes]],
    max_file_mb: float | None,
    ingest: Callable[[list[Path]], IngestReport],
) -> IngestReport:
    """Save ``uploads`` under ``folder`` and ``ingest`` the saved files: one report naming
    both the uploads refused on saving and the files that failed to index.

    A saved file that failed to index is deleted: kept, it was reported again by every
    re-index of the upload folder, and nothing could remove it.
    """
    from rag.ingest.pipeline import IngestReport  # here: the pipeline imports LlamaIndex

    saved, failed = save_uploads(folder, uploads, max_file_mb)
    report = ingest(saved) if saved else IngestReport()
    bad = {str(Path(path).resolve()) for path, _ in report.failed}
    for path in saved:
        if str(path.resolve()) in bad:
            path.unlink(missing_ok=True)
    report.failed = failed + report.failed
    return report
