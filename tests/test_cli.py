"""The command line (`python -m failover demo|check|chat`), run as subprocesses."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import failover
from failover._cli import Term, main
from failover.testing import FakeProvider

COMMAND = [sys.executable, "-m", "failover"]
DEAD_KEY = "sk-fake-dead-0123456789abcdef"


def clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without any real provider settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "COMETAPI_"))}
    env.pop("NO_COLOR", None)
    return {**env, **extra}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*COMMAND, *args], env=clean_env(**env), capture_output=True, text=True, timeout=30
    )
    output = result.stdout + result.stderr
    # No key ever shows beyond its last four characters (the fake keys contain "sk-fake").
    assert "sk-fake" not in output
    assert "\x1b[" not in output  # piped: plain text
    return result


def dead_url() -> str:
    """A URL on a free local port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def chain_env(comet: FakeProvider | None, backup: FakeProvider | None) -> dict[str, str]:
    """Point the zero-config chain at fakes: CometAPI first, OpenAI second (None: dead)."""
    env = {}
    for (url_var, key_var), fake in (
        (("COMETAPI_BASE_URL", "COMETAPI_KEY"), comet),
        (("OPENAI_BASE_URL", "OPENAI_API_KEY"), backup),
    ):
        env[url_var] = fake.base_url if fake else dead_url()
        env[key_var] = fake.api_key if fake else DEAD_KEY
    return env


# -- check ---------------------------------------------------------------------


def test_check_exits_0_when_one_provider_answers(fake_provider) -> None:  # type: ignore[no-untyped-def]
    comet = fake_provider("comet")
    result = run_cli("check", "--timeout", "2", **chain_env(comet, None))
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert comet.base_url in lines["cometapi"]
    assert f"…{comet.api_key[-4:]}" in lines["cometapi"]
    assert "reachable" in lines["cometapi"]
    assert "error: APIConnectionError" in lines["openai"]


def test_check_exits_1_when_none_answers() -> None:
    result = run_cli("check", "--timeout", "2", COMETAPI_BASE_URL=dead_url(), COMETAPI_KEY=DEAD_KEY)
    assert result.returncode == 1
    assert "error: APIConnectionError" in result.stdout
    assert "key missing (set OPENAI_API_KEY)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nope"],
        ["demo", "--calls", "many"],
        ["demo", "--calls", "1"],
        ["check", "--timeout", "0"],
        ["chat"],
    ],
)
def test_bad_usage_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "usage: failover" in capsys.readouterr().err


# -- chat ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_chat_prints_the_answer_and_the_provider(fake_provider, stream: bool) -> None:  # type: ignore[no-untyped-def]
    comet, backup = fake_provider("comet"), fake_provider("backup")
    result = run_cli("chat", "hi", *(["--stream"] if stream else []), **chain_env(comet, backup))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[comet] hi\n"
    assert "served by cometapi" in result.stderr
    assert comet.requests[-1].json.get("stream", False) is stream
    assert comet.requests[-1].json["model"] == "gpt-4o-mini"


def test_chat_fails_over_to_the_backup(fake_provider) -> None:  # type: ignore[no-untyped-def]
    comet, backup = fake_provider("comet"), fake_provider("backup")
    comet.fail(500)
    result = run_cli("chat", "hi", "--model", "m", **chain_env(comet, backup))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[backup] hi\n"
    assert "served by openai" in result.stderr
    assert "cometapi failed: InternalServerError 500" in result.stderr
    assert backup.requests[-1].json["model"] == "m"


def test_chat_exits_1_when_every_provider_fails(fake_provider) -> None:  # type: ignore[no-untyped-def]
    comet = fake_provider("comet")
    comet.fail(503)
    result = run_cli("chat", "hi", **chain_env(comet, None))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "cometapi: InternalServerError 503" in result.stderr
    assert "openai: APIConnectionError" in result.stderr


# -- plumbing --------------------------------------------------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"failover {failover.__version__}"


@pytest.mark.parametrize("command", ["demo", "check", "chat"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: failover {command}")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "no_color", "coloured"),
    [(FakeTTY(), None, True), (FakeTTY(), "1", False), (io.StringIO(), None, False)],
)
def test_colour_only_on_a_tty_without_no_color(
    stream: io.StringIO, no_color: str | None, coloured: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    assert (Term(stream).paint("ok", 32) != "ok") is coloured


# -- demo ----------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def demo_run() -> Iterator[subprocess.Popen[str]]:
    # The slowest command (it waits out breaker cooldowns): started with the module's
    # first test, so that it runs while the others do; its test comes last.
    process = subprocess.Popen(
        [*COMMAND, "demo", "--calls", "12", "--seed", "1"],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    process.kill()
    process.communicate()


def test_demo_serves_every_call_from_both_providers(demo_run: subprocess.Popen[str]) -> None:
    stdout, stderr = demo_run.communicate(timeout=20)
    assert demo_run.returncode == 0, stderr
    calls = re.findall(r"^\s*(\d+)\s+(\S+(?: \S+)?)\s+(comet|openai)\s+[\d,]+ ms", stdout, re.M)
    assert [int(number) for number, _, _ in calls] == list(range(1, 13))
    assert {served for _, _, served in calls} == {"comet", "openai"}
    assert calls[0][2] == calls[-1][2] == "comet"  # healthy at first, recovered at the end
    assert "stream cut" in {phase for _, phase, _ in calls}
    assert re.search(r"comet(?: probe)? \S+ stream cut", stdout)  # the cut stream failed over
    assert re.search(r"^\s*calls\s+12, all answered \(100 % success\)", stdout, re.M)
    served = re.search(r"^\s*served\s+comet (\d+)\W+openai (\d+)$", stdout, re.M)
    assert served is not None
    assert int(served[1]) + int(served[2]) == 12
    assert re.search(r"^\s*latency\s+p50 [\d,]+ ms\W+p99 [\d,]+ ms$", stdout, re.M)
    assert "\x1b[" not in stdout
    assert stderr == ""


def test_demo_brownout_opens_the_breaker_by_rate() -> None:
    result = subprocess.run(
        [*COMMAND, "demo", "--calls", "40", "--seed", "1"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    brownout = [line for line in result.stdout.splitlines() if " brownout " in line]
    assert any("timeout" in line for line in brownout)  # some of its failures are hangs
    assert any("HTTP 500 → comet ✓" in line for line in brownout)  # a 500 served on retry
    assert any("open (rate)" in line for line in brownout)
    assert all("consecutive" not in line for line in brownout)
