"""``rag`` command line: ingest, feed, ask, documents, eval, user, workspace, db, serve. A
stable contract for scripts.

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

    ing = sub.add_parser("ingest", help="index files, folders or web pages (default: seeds/)")
    ing.add_argument(
        "paths",
        nargs="*",
        help=f"files or folders ({SUPPORTED_LABEL}), or http(s) URLs of articles or "
        "RSS/Atom feeds (a feed's current items are fetched once)",
    )
    ing.add_argument("--rebuild", action="store_true", help="drop the index and start over")
    ing.add_argument("--prune", action="store_true", help="remove chunks of deleted files")
    ing.add_argument(
        "--watch",
        action="store_true",
        help="then keep following the paths (index new and changed files, prune deleted "
        "ones) and the registered feeds (`rag feed add`)",
    )
    ing.add_argument("--workspace", default=None, help="index into this workspace")

    _feed_parser(sub)
    _add_ask(sub)
    _add_documents(sub)

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

    _add_accounts(sub)

    serve = sub.add_parser("serve", help="serve the HTTP API (OpenAI-compatible)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    serve.add_argument("--port", type=int, default=8000)
    return parser


def _add_accounts(sub: argparse._SubParsersAction) -> None:
    """``rag user`` (accounts and API keys) and ``rag db`` (the database they live in)."""
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

    db = sub.add_parser("db", help="the app database (accounts, API keys, conversations)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser(
        "migrate", help="copy the SQLite app database of the data dir into an empty PostgreSQL one"
    ).add_argument("--to", required=True, metavar="URL", help="postgresql://user:pw@host:port/db")
    db_sub.add_parser("status", help="which database RAG_DATABASE_URL points to, its version")


def _feed_parser(sub: argparse._SubParsersAction) -> None:
    """`rag feed add|list|remove`: the feeds the watcher and the app follow."""
    feed = sub.add_parser("feed", help="RSS/Atom feeds that `ingest --watch` and the app follow")
    feed_sub = feed.add_subparsers(dest="feed_command", required=True)
    feed_add = feed_sub.add_parser("add", help="register a feed (its items are fetched on watch)")
    feed_add.add_argument("url")
    feed_add.add_argument("--workspace", default=None, help="workspace its articles go to")
    feed_sub.add_parser("list", help="list the registered feeds")
    feed_sub.add_parser("remove", help="stop following a feed").add_argument("url")


def _add_ask(sub: argparse._SubParsersAction) -> None:
    """``rag ask`` and its filters (``rag.retrieval.filters``)."""
    ask = sub.add_parser("ask", help="answer a question with citations")
    ask.add_argument("question")
    ask.add_argument("-k", type=int, default=None, help="passages to retrieve")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument(
        "--absolute",
        action="store_true",
        help="show cited files by absolute path (default: relative to their indexed folder)",
    )
    ask.add_argument(
        "--doc",
        action="append",
        metavar="ID_OR_PATH",
        help="answer only from this document (repeat for several; see `rag documents list`)",
    )
    ask.add_argument("--since", metavar="YYYY-MM-DD", help="only documents dated this day or later")
    ask.add_argument(
        "--until", metavar="YYYY-MM-DD", help="only documents dated this day or earlier"
    )
    ask.add_argument("--folder", metavar="PREFIX", help="only documents under this folder")
    ask.add_argument("--workspace", default=None, help="ask this workspace's documents")


def _add_documents(sub: argparse._SubParsersAction) -> None:
    """``rag documents list|remove`` (``rag docs`` for short)."""
    docs = sub.add_parser("documents", aliases=["docs"], help="list or remove indexed documents")
    docs_sub = docs.add_subparsers(dest="documents_command", required=True)
    listing = docs_sub.add_parser("list", help="title, date, type, size, chunks, who added it")
    listing.add_argument("--json", action="store_true", help="print one JSON object per line")
    remove = docs_sub.add_parser(
        "remove", help="remove a document from the index (and its uploaded file)"
    )
    remove.add_argument("document", metavar="ID_OR_PATH")


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

    urls = [p for p in args.paths if is_url(p)]
    paths = [Path(p) for p in args.paths if not is_url(p)] or ([] if urls else [DEFAULT_CORPUS])
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise RagError(f"no such file or directory: {', '.join(missing)}")
    service = RagService()
    workspace = _workspace(args.workspace, "editor")
    if urls:
        if args.watch or args.rebuild or args.prune:
            raise RagError("URLs are ingested alone: no --watch, --rebuild or --prune with them")
        if args.workspace:
            raise RagError("URLs go to the default workspace; `rag feed add URL --workspace W`")
        return ingest_urls(urls, service, paths)
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


def is_url(arg: str) -> bool:
    """Whether an ``ingest`` argument is a web address rather than a path."""
    return re.match(r"(?i)https?://", arg) is not None


def ingest_urls(urls: list[str], service: RagService, paths: list[Path]) -> int:
    """Fetch and index articles and feeds' current items (then any paths given with them),
    one line per item; exit 3 when every item failed."""
    from rag.ingest.feeds import News

    news = News(
        service.settings,
        service,
        lambda line: print(shown(line), flush=True),
        show_progress=sys.stderr.isatty(),
    )
    run = news.ingest_urls(urls)
    if paths:
        print(service.ingest(paths, show_progress=sys.stderr.isatty()).summary())
    return EXIT_FAILED_FILES if run.failed and not run.paths else 0


def cmd_feed(args: argparse.Namespace) -> int:
    from rag.ingest.feeds import Feeds

    feeds = Feeds(get_settings())
    if args.feed_command == "add":
        url = feeds.add(args.url, args.workspace)
        print(f"following {shown(url)}; `rag ingest --watch` and the app fetch it", file=sys.stderr)
    elif args.feed_command == "remove":
        print(f"removed {shown(feeds.remove(args.url))}", file=sys.stderr)
    else:
        for row in feeds.list():
            checked = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["checked"] or 0))
            seen = f"{checked}\t{row['status']}" if row["checked"] else "never checked"
            print(f"{shown(row['url'])}\t{shown(row['workspace'])}\t{shown(seen)}")
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
    from rag.retrieval.filters import Filters
    from rag.service import RagService, answer_json

    filters = Filters.of(args.doc, args.since, args.until, args.folder)
    service = RagService()
    scope = service.scope([_workspace(args.workspace, "reader")])
    stream = service.ask_stream(args.question, top_k=args.k, filters=filters, scope=scope)
    if args.json:
        print(json_line(answer_json(stream.finalize(), absolute=args.absolute)))
        return 0
    streamed = []
    for token in stream:
        print(shown(token), end="", flush=True)
        streamed.append(token)
    answer = stream.finalize()
    if answer.text.strip() != "".join(streamed).strip():  # a fallback replaced what streamed
        print(("\n\n" if streamed else "") + shown(answer.text), end="")
    print()
    _print_citations(answer.citations, absolute=args.absolute)
    if answer.confidence is not None:
        print(f"confidence: {answer.confidence:.2f}")
    if answer.closest:
        # A refusal's leads: their quotes are nowhere in the answer, so they are printed.
        print(CLOSEST_HEADING)
        _print_citations(answer.closest, quotes=True, absolute=args.absolute)
    if answer.note:
        print(f"note: {shown(answer.note)}", file=sys.stderr)
    print(f"({shown(answer.mode)})", file=sys.stderr)
    return 0


def _print_citations(
    citations: list[Citation], quotes: bool = False, absolute: bool = False
) -> None:
    """One line per citation (where to check it: the file relative to its indexed folder,
    or by absolute path), with its quote below when asked."""
    for c in citations:
        flag = "" if c.verified else " (unverified)"
        page = f" page {c.page}" if c.page else ""
        ocr = " (OCR)" if c.ocr else ""
        dated = f"{c.date} " if c.date else ""  # the document's own date, before its path
        where = f"{dated}{shown(c.source if absolute else c.shown)}:{c.line}"
        if c.url:  # a web article: its page, outlet and date
            where = shown(f"{c.url} ({', '.join(x for x in (c.outlet, c.date) if x)})")
        print(f"  [{c.n}] {where}{page}{ocr} (chars {c.start}-{c.end}){flag}")
        if quotes:
            print(f"      “{shown(' '.join(c.quote.split()))}”")
        if c.supported is False:
            print("      this sentence may not answer the question (answer verifier)")
        if c.missing:
            print(f"      not in this passage: {shown(', '.join(c.missing))}")


def cmd_documents(args: argparse.Namespace) -> int:
    """List the indexed documents, or remove one (``rag documents list|remove``)."""
    from rag.service import RagService

    service = RagService()
    if args.documents_command == "remove":
        record = service.remove_document(args.document)
        print(f"removed {shown(record.title)} ({shown(record.source)})", file=sys.stderr)
        return 0
    for record in service.documents():
        entry = record.to_json()
        if args.json:
            print(json_line(entry))
            continue
        added = " ".join(filter(None, [entry["added_by"], (entry["added_at"] or "")[:10]]))
        cells = [entry["id"], entry["date"] or "-", entry["type"], f"{record.size:,} B"]
        cells += [f"{record.chunks} chunks", added or "-", record.title, entry["source"]]
        print("\t".join(shown(cell) for cell in cells))
    return 0


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


def cmd_db(args: argparse.Namespace) -> int:
    from rag.accounts.db import describe, shown_url
    from rag.accounts.transfer import copy_sqlite_to, schema_version

    settings = get_settings()
    if args.db_command == "status":
        current, known = schema_version(settings)
        print(f"{describe(settings)}\tschema version {current} (this release: {known})")
        return 0
    for table, rows in copy_sqlite_to(settings, args.to).items():
        print(f"{table}\t{rows}")
    print(
        f"copied into {shown_url(args.to)}; set RAG_DATABASE_URL to it for every app process",
        file=sys.stderr,
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from rag.api import serve

    serve(get_settings(), args.host, args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "ingest": cmd_ingest,
        "feed": cmd_feed,
        "ask": cmd_ask,
        "documents": cmd_documents,
        "docs": cmd_documents,
        "eval": cmd_eval,
        "user": cmd_user,
        "workspace": cmd_workspace,
        "db": cmd_db,
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
