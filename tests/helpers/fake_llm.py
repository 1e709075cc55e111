"""A fake OpenAI-compatible chat endpoint for the LLM tests, the reliability tests and the describe benchmark.

It runs in the caller's own process (stdlib ``http.server`` on 127.0.0.1, one thread per
connection), so it serves ``describe_classes`` in-process as well as a ``prolab`` subprocess.
Each class (or, for a repair question, the pair ``"target|other"``) is answered from its own ``script`` of ``Step``s (status, body, headers, delay),
then with a normal completion: whatever ``reply`` returns, by default the bullet list of
``properties_of``. It can also add a fixed latency to every request and *die* after a number
of answers: the connection of the next request is cut without a response and the listening
socket is closed, so every later request meets a refused connection, as when a server process
crashes mid-run. Every request is recorded (when, class asked, prompt, Authorization header,
model) so tests count calls, time retries and check which key and model were sent. ``GET /v1/models``
lists ``models``, as vLLM and llama.cpp's server list the one model they serve.

It imports nothing from ``tests`` so that benchmarks/describe.py can load it by path (a
third-party distribution installs a top-level ``tests`` package in the venv).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_TARGET = re.compile(r"category: ([^\n]+)")
# The repair question (tasks/label_space/repair.py): recorded as the category "target|other".
_REPAIR = re.compile(r"What does an? (.+?) look like that an? (.+?) does not\?")


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


@dataclass
class Step:
    """One scripted response: ``body`` None is a normal completion for the class asked about."""

    status: int = 200
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request as the fake received it; ``at`` is ``time.monotonic()`` on arrival."""

    at: float
    category: str
    content: str
    authorization: str
    model: str


class FakeLLM:
    """Scripted OpenAI-compatible endpoint; use as a context manager.

    ``script``: class name -> responses to give, in order, before normal completions.
    ``latency_s``: added to every answer. ``die_after``: answer that many requests, then cut
    the next one and stop listening. ``reply``: class name -> text of a normal completion
    (default: the bullet list of ``properties_of``). ``port``: 0 for a free one, or a dead
    fake's port to revive it. ``models``: what ``GET /v1/models`` lists.
    """

    def __init__(self, latency_s: float = 0.0, die_after: int | None = None,
                 reply: Callable[[str], str] | None = None, port: int = 0,
                 models: tuple[str, ...] = ("fake-model",)) -> None:
        self.script: dict[str, list[Step]] = {}
        self.latency_s = latency_s
        self.die_after = die_after
        self.reply = reply or (lambda name: "\n".join(f"- {p}" for p in properties_of(name)))
        self.models = models
        self.requests: list[Request] = []
        self.answered: list[str] = []
        self.dead = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = payload["messages"][-1]["content"]
                repair = _REPAIR.search(content)
                category = "|".join(repair.groups()) if repair else _TARGET.findall(content)[-1].strip()
                with fake._lock:
                    fake.requests.append(Request(time.monotonic(), category, content,
                                                 self.headers.get("Authorization", ""), payload.get("model", "")))
                    dying = fake.die_after is not None and len(fake.answered) >= fake.die_after
                    if not dying:
                        fake.answered.append(category)
                        steps = fake.script.get(category, [])
                        step = steps.pop(0) if steps else Step()
                if dying:
                    fake._die(self.connection)
                    return
                time.sleep(fake.latency_s + step.delay_s)
                body = step.body
                if body is None:
                    body = completion(fake.reply(category))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(step.status)
                    if "Content-Type" not in step.headers:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in step.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (read timeout, killed process)

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self.send_error(404)
                    return
                data = json.dumps({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "fake"}
                                                               for name in fake.models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
        """The requests received so far, all or only those about ``category``, in arrival order."""
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
