"""A local stand-in for an OpenAI-compatible chat-completions server: the tests' only fake.

It listens on 127.0.0.1 (a free port, a background thread), answers
``POST /v1/chat/completions`` in the real wire format (SSE chunks when the request asks to
stream, one JSON object otherwise) from a queue of scripted behaviours, and records every
request body, so the tests drive the real ``openai`` client and LlamaIndex through success
and each failure mode without a network. When the queue runs out the last behaviour repeats,
like a server that keeps failing the same way.

Like llama.cpp's server, it honours a request's ``max_tokens`` (one token is one streamed
piece of 4 characters) and then ends with ``finish_reason`` ``length``. The misbehaviours
a real small model showed are scripted too: ``echo()`` repeats the prompt, ``endless()``
streams until the client hangs up, ``ramble()`` writes 1,000 tokens.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ReplyText = str | Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Behaviour:
    """One scripted response: a completion, an HTTP error, a delay, or broken data."""

    text: ReplyText = ""
    status: int = 200
    delay: float = 0.0
    malformed: bool = False
    endless: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    pace: float = 0.0  # seconds between streamed pieces (0: the whole reply at once)
    partial_key: bool = False  # an error echoing the key's head and tail only


def reply(text: ReplyText) -> Behaviour:
    """A completion; ``text`` may be a function of the request body (to cite by content)."""
    return Behaviour(text=text)


def error(status: int, **headers: str) -> Behaviour:
    """An HTTP error with an OpenAI-style body (which echoes the key, as careless servers do)."""
    return Behaviour(status=status, headers={k.replace("_", "-"): v for k, v in headers.items()})


def partial_echo(status: int) -> Behaviour:
    """An HTTP error quoting the key in part, as OpenAI's "Incorrect API key provided" does."""
    return Behaviour(status=status, partial_key=True)


def paced(text: str, seconds: float) -> Behaviour:
    """A completion streamed one piece every ``seconds``, so a client can leave mid-way
    (``StandIn.streams`` records whether it did)."""
    return Behaviour(text=text, pace=seconds)


def slow(seconds: float, text: str = "Trop tard.") -> Behaviour:
    """A completion that starts only after ``seconds`` (past the client's timeout)."""
    return Behaviour(text=text, delay=seconds)


def echo() -> Behaviour:
    """A model that repeats its whole prompt (system rules, passage markup and all)."""
    return reply(lambda body: "\n\n".join(str(m["content"]) for m in body["messages"]))


def endless(text: str = "Encore un mot, ") -> Behaviour:
    """A stream that never ends: ``text`` again and again, a piece every 20 ms."""
    return Behaviour(text=text, endless=True)


def ramble(words: int = 1000) -> Behaviour:
    """A 1,000-token reply about nothing in the documents (no ``max_tokens`` stops it here)."""
    return reply(" ".join(f"blabla{i % 7}" for i in range(words)))


def malformed() -> Behaviour:
    """A 200 response whose data is not JSON."""
    return Behaviour(malformed=True)


class StandIn:
    """The server; ``script()`` queues behaviours, ``requests`` holds what it received."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.keys: list[str] = []
        # How each paced stream ended: "complete", or "abandoned" when the client closed
        # the connection before the last piece.
        self.streams: list[str] = []
        self._queue: list[Behaviour] = []
        self._last = error(500)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *behaviours: Behaviour) -> None:
        """Replace the queue and forget earlier requests."""
        with self._lock:
            self._queue = list(behaviours)
            self.requests.clear()
            self.keys.clear()
            self.streams.clear()

    def next(self, body: dict[str, Any], key: str) -> Behaviour:
        with self._lock:
            self.requests.append(body)
            self.keys.append(key)
            if self._queue:
                self._last = self._queue.pop(0)
            return self._last

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(standin: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key = self.headers.get("Authorization", "").removeprefix("Bearer ")
            behaviour = standin.next(body, key)
            time.sleep(behaviour.delay)
            # The client may have given up (timeout) before we answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._respond(behaviour, body, key)

        def _respond(self, behaviour: Behaviour, body: dict[str, Any], key: str) -> None:
            if behaviour.status != 200:
                shown = f"{key[:12]}{'*' * 20}{key[-4:]}" if behaviour.partial_key else key
                message = f"scripted HTTP {behaviour.status} (key presented: {shown})"
                payload = {"error": {"message": message, "type": "stand_in", "code": None}}
                self._send(behaviour.status, "application/json", json.dumps(payload), behaviour)
                return
            text = behaviour.text(body) if callable(behaviour.text) else behaviour.text
            if not body.get("stream"):
                data = "{not json" if behaviour.malformed else json.dumps(_completion(text))
                self._send(200, "application/json", data, behaviour)
                return
            if behaviour.endless:
                self._stream_forever(text)
                return
            if behaviour.malformed:
                events = ["{not json"]
            else:
                pieces, finish = _limited(_pieces(text), body.get("max_tokens"))
                events = [json.dumps(_chunk(piece)) for piece in pieces]
                events += [json.dumps(_chunk(None, finish=finish)), "[DONE]"]
            if behaviour.pace:
                self._stream_paced(events, behaviour.pace)
                return
            self._send(
                200, "text/event-stream", "".join(f"data: {e}\n\n" for e in events), behaviour
            )

        def _stream_paced(self, events: list[str], pace: float) -> None:
            """The events one at a time, until the last or until the client is gone."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()  # no length: the body ends when the connection closes
            try:
                for event in events:
                    self.wfile.write(f"data: {event}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(pace)
            except (BrokenPipeError, ConnectionResetError):
                standin.streams.append("abandoned")
                raise
            standin.streams.append("complete")

        def _stream_forever(self, text: str) -> None:
            """SSE chunks until the client closes the connection (or 10 minutes pass)."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                self.wfile.write(f"data: {json.dumps(_chunk(text))}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.02)

        def _send(self, status: int, ctype: str, data: str, behaviour: Behaviour) -> None:
            raw = data.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            for name, value in behaviour.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

    return Handler


def _pieces(text: str) -> list[str]:
    """Token-sized pieces (a few characters each), as a real model streams them."""
    return [text[i : i + 4] for i in range(0, len(text), 4)]


def _limited(pieces: list[str], max_tokens: int | None) -> tuple[list[str], str]:
    """The pieces a ``max_tokens`` budget allows, and the finish reason."""
    if max_tokens is not None and len(pieces) > max_tokens:
        return pieces[:max_tokens], "length"
    return pieces, "stop"


def _chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {"role": "assistant", "content": content} if content is not None else {}
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stand-in",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": 0,
        "model": "stand-in",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
