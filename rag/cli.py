"""``rag`` command line: ingest, ask, eval. A stable contract other tools script against.

User mistakes (missing paths, empty index, wrong embedder, bad questions) print one line
starting with ``error:`` and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rag.answer import QuestionError
from rag.config import get_settings
from rag.ingest import IngestError
from rag.store import StoreError

DEFAULT_CORPUS = Path("seeds")
EXIT_USAGE = 2
EXIT_FAILED_FILES = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Cited answers from your documents.")
    sub = parser.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="index files or folders (default: seeds/)")
    ing.add_argument("paths", nargs="*", type=Path, help="files or folders (.txt, .md)")
    ing.add_argument("--rebuild", action="store_true", help="drop the index and start over")
    ing.add_argument("--prune", action="store_true", help="remove chunks of deleted files")

    ask = sub.add_parser("ask", help="answer a question with citations")
    ask.add_argument("question")
    ask.add_argument("-k", type=int, default=None, help="passages to retrieve")
    ask.add_argument("--json", action="store_true", help="print one JSON object")

    ev = sub.add_parser("eval", help="retrieval and answer figures on PIAF-format files")
    ev.add_argument("--passages", type=Path, required=True)
    ev.add_argument("--questions", type=Path, required=True)
    ev.add_argument(
        "--off-corpus", type=Path, default=None, help="JSONL of questions that must be refused"
    )
    ev.add_argument("--k", default="1,3,5,10", help="comma-separated cut-offs")
    ev.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag.service import RagService

    paths = args.paths or [DEFAULT_CORPUS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or directory: {', '.join(missing)}")
    service = RagService()
    report = service.ingest(
        paths, rebuild=args.rebuild, prune=args.prune, show_progress=sys.stderr.isatty()
    )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for path, reason in report.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(report.summary())
    if report.failed and not (report.added or report.updated or report.unchanged):
        return EXIT_FAILED_FILES
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.service import RagService

    stream = RagService().ask_stream(args.question, top_k=args.k)
    if args.json:
        print(json.dumps(stream.finalize().to_json(), ensure_ascii=False))
        return 0
    shown = []
    for token in stream:
        print(token, end="", flush=True)
        shown.append(token)
    answer = stream.finalize()
    if answer.answer.strip() != "".join(shown).strip():  # a fallback replaced what streamed
        print(("\n\n" if shown else "") + answer.answer, end="")
    print()
    for c in answer.citations:
        flag = "" if c.verified else " (unverified)"
        page = f" page {c.page}" if c.page else ""
        print(f"  [{c.n}] {c.source}:{c.line}{page} (chars {c.start}-{c.end}){flag}")
    if answer.note:
        print(f"note: {answer.note}", file=sys.stderr)
    print(f"({answer.mode})", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.evaluate import evaluate_files

    cutoffs = [int(k) for k in args.k.split(",") if k.strip()]
    result = evaluate_files(
        get_settings(), args.passages, args.questions, cutoffs, args.mode, args.off_corpus
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            "  ".join(
                f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                for key, value in result.items()
            )
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"ingest": cmd_ingest, "ask": cmd_ask, "eval": cmd_eval}[args.command]
    try:
        return handler(args)
    except (StoreError, IngestError, QuestionError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
