"""``rag`` command line: ingest, ask, eval, user, workspace, serve. A stable contract for
scripts.

User mistakes (missing paths, empty index, wrong embedder, bad questions) print one line
starting with ``error:`` and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rag.accounts.users import AccountError
from rag.config import get_settings
from rag.documents.formats import SUPPORTED_LABEL
from rag.errors import RagError

if TYPE_CHECKING:
    from rag.accounts.workspaces import MemberRole
    from rag.documents.citations import Citation
    from rag.service import RagService

# Characters a terminal acts on rather than prints: C0 controls but tab and line feed (ESC
# starts colour, cursor, title and clipboard sequences; CR overwrites the line), DEL, C1
# controls (U+009B is a one-character CSI) and the bidirectional overrides and isolates
# that make text display in another order than it reads.
_TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# C1 controls survive ``json.dumps(ensure_ascii=False)``; JSON output escapes them.
_C1 = re.compile("[\x7f-\x9f]")
DEFAULT_CORPUS = Path("seeds")
EXIT_USAGE = 2
EXIT_FAILED_FILES = 3
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Cited answers from your documents.")
    sub = parser.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="index files or folders (default: seeds/)")
    ing.add_argument("paths", nargs="*", type=Path, help=f"files or folders ({SUPPORTED_LABEL})")
    ing.add_argument("--rebuild", action="store_true", help="drop the index and start over")
    ing.add_argument("--prune", action="store_true", help="remove chunks of deleted files")
    ing.add_argument(
        "--watch",
        action="store_true",
        help="then keep following the paths: index new and changed files, prune deleted ones",
    )
    ing.add_argument("--workspace", default=None, help="index into this workspace")

    ask = sub.add_parser("ask", help="answer a question with citations")
    ask.add_argument("question")
    ask.add_argument("-k", type=int, default=None, help="passages to retrieve")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--workspace", default=None, help="ask this workspace's documents")

    ev = sub.add_parser(
        "eval", help="retrieval recall@k / MRR and answer-level figures on PIAF-format files"
    )
    ev.add_argument("--passages", type=Path, required=True)
    ev.add_argument("--questions", type=Path, required=True)
    ev.add_argument("--k", default="1,3,5,10", help="comma-separated cut-offs")
    ev.add_argument("--mode", choices=["hybrid", "dense", "bm25"], default="hybrid")
    ev.add_argument(
        "--off-corpus", type=Path, default=None, help="questions the passages cannot answer"
    )
    ev.add_argument("--retrieval-only", action="store_true", help="skip the answer-level figures")
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    user = sub.add_parser("user", help="manage accounts (sign-in is on once one exists)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="add an account (asks for its password)")
    add.add_argument("name")
    add.add_argument("--role", choices=["reader", "editor", "admin"], required=True)
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    user_sub.add_parser(
        "remove", help="delete an account, its API keys and its conversations"
    ).add_argument("name")
    user_sub.add_parser("list", help="list accounts and their roles")
    token = user_sub.add_parser("token", help="print a new API key for NAME")
    token.add_argument("name")
    token.add_argument("--workspace", default=None, help="limit the key to this workspace")
    _workspace_parser(sub)

    serve = sub.add_parser("serve", help="serve the HTTP API (OpenAI-compatible)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument("--port", type=int, default=8000)
    return parser


def _workspace_parser(sub: argparse._SubParsersAction) -> None:
    """``rag workspace``: add, list, remove, grant, revoke."""
    ws = sub.add_parser("workspace", help="manage workspaces and their members")
    ws_sub = ws.add_subparsers(dest="workspace_command", required=True)
    ws_sub.add_parser("add", help="add a workspace").add_argument("name")
    ws_sub.add_parser("list", help="list workspaces and their members")
    ws_sub.add_parser(
        "remove", help="delete a workspace, its documents, members and conversations"
    ).add_argument("name")
    grant = ws_sub.add_parser("grant", help="make USER a member of NAME")
    grant.add_argument("name")
    grant.add_argument("user")
    grant.add_argument("--role", choices=["reader", "editor"], required=True)
    revoke = ws_sub.add_parser("revoke", help="remove USER from NAME")
    revoke.add_argument("name")
    revoke.add_argument("user")


def shown(text: str) -> str:
    """Document or user text made safe to print: terminal controls removed.

    Document text, file names and server messages reach the terminal through ``rag``;
    an escape sequence in a document must not recolour, retitle or rewrite the screen.
    """
    return _TERMINAL_CONTROLS.sub("", text)


def json_line(data: object) -> str:
    """``data`` as one JSON line, non-ASCII kept but every control character escaped."""
    text = json.dumps(data, ensure_ascii=False)
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag.service import RagService

    paths = args.paths or [DEFAULT_CORPUS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RagError(f"no such file or directory: {', '.join(missing)}")
    service = RagService()
    workspace = _workspace(args.workspace, "editor")
    if args.watch:
        if args.rebuild:
            raise RagError("--watch cannot rebuild: run `rag ingest --rebuild` first")
        if args.workspace:
            raise RagError("--watch keeps the default workspace only; drop --workspace")
        return watch_until_interrupted(paths, service)
    report = service.ingest(
        paths,
        rebuild=args.rebuild,
        prune=args.prune,
        show_progress=sys.stderr.isatty(),
        workspace=workspace,
    )
    for note in report.notes:
        print(f"note: {shown(note)}", file=sys.stderr)
    for path, reason in report.failed:
        print(f"failed: {shown(path)}: {shown(reason)}", file=sys.stderr)
    print(report.summary())
    if report.failed and not (report.added or report.updated or report.unchanged):
        return EXIT_FAILED_FILES
    return 0


def watch_until_interrupted(paths: list[Path], service: RagService) -> int:
    """Run the watcher until Ctrl-C; the step under way when it comes is finished first.

    A second Ctrl-C stops at once (ingest's write order keeps even that safe to re-run).
    """
    from rag.ingest.watch import watch

    stop = threading.Event()

    def on_interrupt(_signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        os.write(2, b"stopping after the current step (Ctrl-C again to stop at once)\n")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    print("indexing, then watching for changes (Ctrl-C to stop)", file=sys.stderr)
    try:
        watch(paths, service, stop, out=lambda line: print(shown(line), flush=True))
    finally:
        signal.signal(signal.SIGINT, previous)
    print("stopped; the index matches the files as last seen", file=sys.stderr)
    return EXIT_INTERRUPTED


CLOSEST_HEADING = "Closest passages (they may not answer your question):"


def cmd_ask(args: argparse.Namespace) -> int:
    from rag.service import RagService

    service = RagService()
    scope = service.scope([_workspace(args.workspace, "reader")])
    stream = service.ask_stream(args.question, top_k=args.k, scope=scope)
    if args.json:
        print(json_line(stream.finalize().to_json()))
        return 0
    streamed = []
    for token in stream:
        print(shown(token), end="", flush=True)
        streamed.append(token)
    answer = stream.finalize()
    if answer.text.strip() != "".join(streamed).strip():  # a fallback replaced what streamed
        print(("\n\n" if streamed else "") + shown(answer.text), end="")
    print()
    _print_citations(answer.citations)
    if answer.confidence is not None:
        print(f"confidence: {answer.confidence:.2f}")
    if answer.closest:
        # A refusal's leads: their quotes are nowhere in the answer, so they are printed.
        print(CLOSEST_HEADING)
        _print_citations(answer.closest, quotes=True)
    if answer.note:
        print(f"note: {shown(answer.note)}", file=sys.stderr)
    print(f"({shown(answer.mode)})", file=sys.stderr)
    return 0


def _print_citations(citations: list[Citation], quotes: bool = False) -> None:
    """One line per citation (where to check it), with its quote below when asked."""
    for c in citations:
        flag = "" if c.verified else " (unverified)"
        page = f" page {c.page}" if c.page else ""
        ocr = " (OCR)" if c.ocr else ""
        print(f"  [{c.n}] {shown(c.source)}:{c.line}{page}{ocr} (chars {c.start}-{c.end}){flag}")
        if quotes:
            print(f"      “{shown(' '.join(c.quote.split()))}”")
        if c.supported is False:
            print("      this sentence may not answer the question (answer verifier)")
        if c.missing:
            print(f"      not in this passage: {shown(', '.join(c.missing))}")


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.evaluate import evaluate_files

    cutoffs = [int(k) for k in args.k.split(",") if k.strip()]
    result = evaluate_files(
        get_settings(),
        args.passages,
        args.questions,
        cutoffs,
        args.mode,
        args.off_corpus,
        answers=not args.retrieval_only,
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


def _read_password(args: argparse.Namespace) -> str:
    """From standard input (its first line), or typed twice at a prompt that does not echo."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Repeat it: ") != password:
        raise AccountError("The two passwords differ.")
    return password


def cmd_user(args: argparse.Namespace) -> int:
    from rag.accounts.conversations import Conversations
    from rag.accounts.users import Accounts

    accounts = Accounts(get_settings())
    if args.user_command == "add":
        earlier = len(Conversations(get_settings()).list())  # saved before any account
        first_admin = args.role == "admin" and not any(u.can("admin") for u in accounts.list())
        user = accounts.add(args.name, _read_password(args), args.role)
        print(f"added {user.name} ({user.role}); sign-in is now required", file=sys.stderr)
        if first_admin and earlier:
            print(f"{earlier} conversation(s) saved before sign-in are now {user.name}'s")
    elif args.user_command == "remove":
        accounts.remove(args.name)
        left = "" if accounts.enabled() else "; no account left: sign-in is off"
        print(f"removed {args.name}{left}", file=sys.stderr)
    elif args.user_command == "list":
        for user in accounts.list():
            created = time.strftime("%Y-%m-%d", time.localtime(user.created))
            print(f"{shown(user.name)}\t{user.role}\t{created}")
    else:
        workspace = args.workspace
        if workspace is not None:
            from rag.accounts.workspaces import Workspaces

            user = accounts.get(args.name)
            if user is None:
                raise AccountError(f"No user named {args.name!r}.")
            Workspaces(get_settings()).check(user, workspace)
        print(accounts.new_key(args.name, workspace))
    return 0


def _workspace(name: str | None, role: MemberRole) -> str:
    """The workspace a command names (default: the default one), checked to exist.

    The command line is the operator's (as ``rag user``): it may use every workspace.
    """
    from rag.accounts.workspaces import Workspaces
    from rag.config import DEFAULT_WORKSPACE

    return Workspaces(get_settings()).check(None, name or DEFAULT_WORKSPACE, role)


def cmd_workspace(args: argparse.Namespace) -> int:
    from rag.accounts.workspaces import Workspaces

    workspaces = Workspaces(get_settings())
    command = args.workspace_command
    if command == "add":
        workspaces.add(args.name)
        print(f"added workspace {args.name}", file=sys.stderr)
    elif command == "list":
        default, *named = workspaces.names()
        print(f"{default}\teveryone")
        for name in named:
            members = ", ".join(f"{shown(u)} ({r})" for u, r in workspaces.members(name))
            print(f"{shown(name)}\t{members or 'admins only'}")
    elif command == "remove":
        from rag.service import RagService

        workspaces.members(args.name)  # the default workspace or an unknown name: refused
        removed = RagService().forget_workspace(args.name)
        workspaces.remove(args.name)
        print(f"removed workspace {args.name} and its {removed} document(s)", file=sys.stderr)
    elif command == "grant":
        workspaces.grant(args.name, args.user, args.role)
        print(f"{args.user} is now {args.role} of {args.name}", file=sys.stderr)
    else:
        workspaces.revoke(args.name, args.user)
        print(f"{args.user} is no longer a member of {args.name}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rag.api import serve

    serve(get_settings(), args.host, args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "ingest": cmd_ingest,
        "ask": cmd_ask,
        "eval": cmd_eval,
        "user": cmd_user,
        "workspace": cmd_workspace,
        "serve": cmd_serve,
    }[args.command]
    try:
        return handler(args)
    except RagError as exc:
        print(f"error: {shown(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
