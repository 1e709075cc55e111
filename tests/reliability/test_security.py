"""Security: the API key leaves no trace, checkpoints never run code, LLM replies stay data,
and the servers the project starts listen on the loopback interface only."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import torch

from data.demo import DEMO_CLASSES
from tasks.label_space.describe import describe_classes
from tasks.label_space.llm.client import LLMSettings
from tasks.label_space.llm.replies import MAX_PROPERTIES, MAX_PROPERTY_CHARS, MAX_REPLY_CHARS
from tests.helpers.cli import last_line, prolab
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.label_space_factory import make_label_space

# ------------------------------------------------------------------------- the API key


def _files_holding(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_a_canary_key_used_in_a_full_run_appears_nowhere(cli_env: dict[str, str]) -> None:
    canary = f"sk-canary-{uuid.uuid4().hex}"
    env = {**cli_env, "OPENAI_API_KEY": canary}
    with FakeLLM() as llm:
        result = prolab(env, "label-space", "--dataset", "camvid", "--llm", llm.base_url, "--model", "fake-model",
                        "--k", "4")
        last_line(result)
        assert {r.authorization for r in llm.asked()} == {f"Bearer {canary}"}, "the key was really used"
    assert canary not in result.stdout and canary not in result.stderr
    assert _files_holding(Path(cli_env["PROLAB_ARTIFACTS"]), canary.encode()) == []
    prefect_home = Path(cli_env["PROLAB_PREFECT_HOME"])
    assert list(prefect_home.rglob("*.db")), "the Prefect database is where this test looks"
    assert _files_holding(prefect_home, canary.encode()) == []  # database, its WAL, the server log


# ------------------------------------------------------------------------- checkpoints

MARKER_ENV = "PROLAB_TEST_PWNED"


class _Exploit:
    """Pickles as a call to os.system: loading it with the full unpickler would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_carrying_code_is_refused_not_run(cli_env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": _Exploit(marker)}, evil)
    space = make_label_space(tmp_path / "ls", DEMO_CLASSES, k=6, dim=16)
    result = prolab(cli_env, "evaluate", "--config", "demo", "--label-space", str(space), "--checkpoint", str(evil),
                    "--cfg-options", "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False")
    assert not marker.exists(), "the checkpoint's code ran"
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert str(evil) in message and "system" in message, message
    assert not list(Path(cli_env["PROLAB_ARTIFACTS"]).glob("evaluate/[!.]*"))


# ------------------------------------------------------------------------- LLM replies

HOSTILE = (
    "- ../../etc/passwd\n- /etc/shadow\n- __import__('os').system('touch {marker}')\n"
    "- {{{{ 7 * 7 }}}}\n- " + "x" * 5000 + "\n" + "".join(f"- item {i}\n" for i in range(200))
)


def test_hostile_and_huge_replies_stay_bounded_data(tmp_path: Path) -> None:
    marker = tmp_path / "evaluated"
    cache = tmp_path / "cache"
    huge = HOSTILE.format(marker=marker) + "- tail " * 400_000  # about 2.8 MB
    with FakeLLM(reply=lambda name: huge if name == "huge" else HOSTILE.format(marker=marker)) as llm:
        settings = LLMSettings(base_url=llm.base_url, model="fake-model", api_key_env=None, max_retries=0)
        report = describe_classes(["../../etc/passwd", "huge"], settings, cache)
    assert not marker.exists()
    for name, properties in report.descriptions.items():
        assert len(report.raw_replies[name]) <= MAX_REPLY_CHARS
        assert 0 < len(properties) <= MAX_PROPERTIES and all(len(p) <= MAX_PROPERTY_CHARS for p in properties)
    assert "../../etc/passwd" in report.descriptions["huge"], "kept as text, not followed"
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert len(written) == 2 and all(p.parent == cache for p in written)
    assert all(len(p.stem) == 32 and set(p.stem) <= set("0123456789abcdef") for p in written)
    assert all(p.stat().st_size < 4 * MAX_REPLY_CHARS for p in written)


# ------------------------------------------------------------------------- listening sockets


def _listening(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port`` (IPv4 and IPv6), from /proc/net."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                addresses.append(_address(host))
    return addresses


def _address(host: str) -> str:
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    return __import__("ipaddress").IPv6Address(b"".join(words)).compressed


def test_the_prefect_server_listens_on_loopback_only(prefect_server: dict[str, str]) -> None:
    addresses = _listening(int(prefect_server["PROLAB_PREFECT_PORT"]))
    assert addresses and set(addresses) == {"127.0.0.1"}, addresses


@pytest.mark.timeout(300)
def test_the_local_llm_server_listens_on_loopback_only() -> None:
    from urllib.parse import urlsplit

    from tasks.label_space.llm_server import local_llm_server

    with local_llm_server() as settings:
        port = urlsplit(settings.base_url).port
        addresses = _listening(port)
    assert addresses and set(addresses) == {"127.0.0.1"}, addresses
    assert _listening(port) == [], "the server stops with the block"
