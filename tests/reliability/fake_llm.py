"""A fake OpenAI-compatible chat endpoint for the reliability tests and the describe benchmark.

It runs in the test's own process (stdlib ``http.server`` on 127.0.0.1, one thread per
connection) and serves a ``prolab`` subprocess over HTTP. Beyond a normal answer per class it
can add a fixed latency to every request, reply with whatever ``reply`` returns, and *die*
after a number of answers: the connection of the next request is cut without a response and
the listening socket is closed, so every later request meets a refused connection, as when
a server process crashes mid-run. Every request is recorded (class asked, Authorization
header) so tests count calls and check which key was sent.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TARGET = re.compile(r"category: ([^\n]+)")


def completion(content: str | None) -> dict[str, Any]:
    """A chat.completion body with ``content`` as the first choice's text."""
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }


def properties_of(name: str) -> list[str]:
    """What the fake answers for a class by default: three distinct properties."""
    return [f"{name} shape", f"{name} colour", f"{name} context"]


@dataclass(frozen=True)
class Request:
    category: str
    authorization: str


class FakeLLM:
    """Scripted OpenAI-compatible endpoint; use as a context manager.

    ``latency_s``: added to every answer. ``die_after``: answer that many requests, then cut
    the next one and stop listening. ``reply``: class name -> reply text (default: the
    bullet list of ``properties_of``).
    """

    def __init__(self, latency_s: float = 0.0, die_after: int | None = None,
                 reply: Callable[[str], str] | None = None, port: int = 0) -> None:
        self.latency_s = latency_s
        self.die_after = die_after
        self.reply = reply or (lambda name: "\n".join(f"- {p}" for p in properties_of(name)))
        self.requests: list[Request] = []
        self.answered: list[str] = []
        self.dead = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                category = _TARGET.findall(payload["messages"][-1]["content"])[-1].strip()
                with fake._lock:
                    fake.requests.append(Request(category, self.headers.get("Authorization", "")))
                    dying = fake.die_after is not None and len(fake.answered) >= fake.die_after
                    if not dying:
                        fake.answered.append(category)
                if dying:
                    fake._die(self.connection)
                    return
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                data = json.dumps(completion(fake.reply(category))).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def _die(self, connection: socket.socket) -> None:
        """Cut this request's connection and stop listening (once)."""
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if not self.dead.is_set():
            self.dead.set()
            threading.Thread(target=self.close, daemon=True).start()

    def asked(self, category: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if category is None or r.category == category]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.dead.is_set():
            self.close()
