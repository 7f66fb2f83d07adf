"""The command line: ``failover demo``, ``failover check`` and ``failover chat``.

stdlib ``argparse`` only. Keys are never printed beyond their last four characters,
and errors are shown as class plus HTTP status only, since provider error
messages can quote the key.
"""

from __future__ import annotations

import argparse
import enum
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO, TypeVar

import openai

import failover

from ._errors import describe
from ._providers import Provider, default_providers

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from .testing import FakeProvider

PRIMARY, BACKUP = "comet", "openai"
OPENAI_BASE_URL = "https://api.openai.com/v1"


class Term:
    """Colour and progress for one output stream: only on a TTY, and never with NO_COLOR."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.colour = self.tty and not os.environ.get("NO_COLOR")
        # Piped into a non-UTF-8 consumer: stick to ASCII symbols.
        self.fancy = (getattr(stream, "encoding", None) or "").lower().startswith("utf")

    def paint(self, text: str, *codes: int) -> str:
        if not self.colour or not codes:
            return text
        return f"\x1b[{';'.join(map(str, codes))}m{text}\x1b[0m"

    def sym(self, fancy: str, plain: str) -> str:
        return fancy if self.fancy else plain

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def status(self, text: str) -> None:
        """A transient progress line, overwritten by the next output (TTY only)."""
        if self.tty:
            self.stream.write(f"\r\x1b[2K{text}")
            self.stream.flush()


GREEN, YELLOW, RED, CYAN, BOLD, DIM = 32, 33, 31, 36, 1, 2
STATE_COLOURS = {"closed": GREEN, "half_open": YELLOW, "open": RED}


def mask(key: str) -> str:
    """At most the last four characters, and none of a key too short to hide them in."""
    return f"key …{key[-4:]}" if len(key) >= 12 else "key set"


def reason(exc: BaseException) -> str:
    """A few secret-free words on why an attempt did not serve (the demo's column)."""
    if isinstance(exc, failover.StreamTruncated):
        return "stream cut"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}" if isinstance(status, int) else describe(exc)


def explain(exc: BaseException) -> str:
    """Class and HTTP status, never the message: provider messages can quote the key."""
    hint = f" (set {exc.variable})" if isinstance(exc, failover.MissingAPIKey) else ""
    return describe(exc) + hint


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every value shown was observed)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def ask_once(
    client: openai.OpenAI,
    model: str,
    prompt: str,
    stream: bool,
    show: Callable[[str], None] | None = None,
) -> str:
    """One chat completion's text; a streamed one is read to its end, ``show``-ing each piece."""
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompt}]
    if not stream:
        reply = client.chat.completions.create(model=model, messages=messages)
        return reply.choices[0].message.content or ""
    pieces = []
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
        piece = chunk.choices[0].delta.content if chunk.choices else None
        if piece:
            pieces.append(piece)
            if show is not None:
                show(piece)
    return "".join(pieces)


# -- demo ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    label: str  # the line announcing it
    apply: Callable[[FakeProvider], None]
    stream: bool = False  # the body streams its completion


def brownout(fake: FakeProvider) -> None:
    """Two requests in five fail (a hang, a 500), never two in a row: only the failure
    rate can tell that the provider is unwell. The 500's retry answers."""
    fake.recover()
    for _ in range(12):
        fake.hang(0, times=1)  # answers at once
        fake.hang(3.0, times=1)
        fake.hang(0, times=1)
        fake.fail(500, times=1)
        fake.hang(0, times=1)


PHASES = (
    Phase("healthy", "all healthy", lambda f: f.recover()),
    Phase("brownout", f"{PRIMARY} browns out: 2 requests in 5 fail (500s, hangs)", brownout),
    Phase("HTTP 500", f"{PRIMARY} answers HTTP 500", lambda f: f.fail(500)),
    Phase("hang", f"{PRIMARY} hangs (attempt timeout 0.5 s)", lambda f: f.hang(3.0)),
    Phase(
        "stream cut",
        f"{PRIMARY} cuts streams short, silently",
        lambda f: f.truncate_stream(2),
        True,
    ),
    Phase("recovered", f"{PRIMARY} is back; the breaker probes it", lambda f: f.recover()),
)
COLUMNS = f"{'#':>4}  {'phase':<11} {'served by':<9} {'latency':>8}    {'breaker':<18} attempts"


def phase_lengths(calls: int, rng: random.Random) -> list[int]:
    """Split ``calls`` over the phases, jittered by the seed, at least one each."""
    weights = [rng.uniform(0.7, 1.3) for _ in PHASES]
    weights[1] += 0.6  # the brownout needs min_calls calls before its rate tells
    weights[-1] += 0.4  # recovery needs room for the probe and the calls after it
    lengths = [1 + int((calls - len(PHASES)) * w / sum(weights)) for w in weights]
    for i in rng.sample(range(len(PHASES)), calls - sum(lengths)):
        lengths[i] += 1
    return lengths


def primary_health() -> tuple[str, float]:
    """The primary's breaker state (with why it opened), and when it may be probed."""
    record = failover.health().get(PRIMARY, {})
    state, until, why = record.get("state"), record.get("open_until"), record.get("reason")
    value = state.value if isinstance(state, failover.State) else "closed"
    if value == "open" and isinstance(why, enum.Enum):
        value = f"open ({why.value})"
    return value, until if isinstance(until, float) else 0.0


# Scaled down from the defaults (failure_rate 0.25 kept) so that a few dozen calls
# show every rule.
DEMO_BREAKER = failover.Breaker(failures=2, cooldown=0.5, max_cooldown=1.0, min_calls=6)


@dataclass(frozen=True)
class Row:
    served: str
    elapsed: float
    failover: bool


class Demo:
    """Calls through ``@with_fallback`` while the fake primary goes down and comes back."""

    def __init__(self, fakes: tuple[FakeProvider, FakeProvider], out: Term) -> None:
        self.out = out
        self.events: list[failover.Event] = []
        self.probe = False  # the call's attempt on the primary is the breaker's probe
        self.rows: list[Row] = []
        chain = [failover.Provider(f.name, base_url=f.base_url, api_key=f.api_key) for f in fakes]
        breaker = DEMO_BREAKER

        @failover.with_fallback(
            *chain, breaker=breaker, attempt_timeout=0.5, on_attempt=self.events.append
        )
        def ask(prompt: str, stream: bool, client: openai.OpenAI | None = None) -> tuple[str, str]:
            assert client is not None  # injected by @with_fallback
            served = failover.current_provider() or "?"
            self.probe |= served == PRIMARY and primary_health()[0] == "half_open"
            return served, ask_once(client, "gpt-4o-mini", prompt, stream)

        self.ask = ask

    def call(self, number: int, phase: Phase) -> Row:
        self.events.clear()
        self.probe = False
        prompt = f"question {number}"
        started = time.monotonic()
        served, answer = self.ask(prompt, phase.stream)
        if answer != f"[{served}] {prompt}":  # a cut-short answer must never pass as served
            raise RuntimeError(f"call {number}: incomplete answer {answer!r} from {served}")
        moved = any(e.provider != served for e in self.events)  # not a retry on one provider
        row = Row(served, time.monotonic() - started, moved)
        self.rows.append(row)
        return row

    def show(self, number: int, phase: Phase, row: Row) -> None:
        out, steps = self.out, []
        for e in self.events:
            name = f"{e.provider} probe" if e.provider == PRIMARY and self.probe else e.provider
            if e.error is None:
                steps.append(out.paint(f"{name} {out.sym('✓', 'ok')}", GREEN))
            elif e.outcome is failover.Outcome.SKIPPED:
                steps.append(out.paint(f"{name} skipped (open)", DIM))
            else:
                steps.append(out.paint(f"{name} {out.sym('✗', 'x')} {reason(e.error)}", RED))
        state = primary_health()[0]
        out.line(
            f"{number:>4}  {phase.name:<11} "
            + out.paint(f"{row.served:<9}", YELLOW if row.failover else GREEN)
            + f" {ms(row.elapsed):>8} "
            + out.paint(out.sym("↪", "*") if row.failover else " ", YELLOW)
            + "  "
            + out.paint(f"{state:<18}", STATE_COLOURS.get(state.split()[0], DIM))
            + f" {out.sym(' → ', ' -> ').join(steps)}"
        )

    def run(self, lengths: list[int], primary: FakeProvider) -> None:
        number = 0
        for phase, length in zip(PHASES, lengths, strict=True):
            phase.apply(primary)
            self.out.line(self.out.paint(f"{'':>4}  {self.out.sym('▸', '>')} {phase.label}", CYAN))
            tried = False  # the primary was attempted in this phase, so its fault was shown
            probe_at = length // 2 if phase is PHASES[-1] else length - 1
            for i in range(length):
                state, until = primary_health()
                if state.startswith("open") and not tried and i <= probe_at:
                    # Spread the wait for the cooldown over the calls up to the probe
                    # point, so that every phase shows the breaker's half-open probe.
                    time.sleep(max(0.0, until - time.time()) / (probe_at - i + 1) + 0.01)
                number += 1
                self.show(number, phase, self.call(number, phase))
                tried |= any(
                    e.provider == PRIMARY and e.outcome is not failover.Outcome.SKIPPED
                    for e in self.events
                )

    def summary(self) -> None:
        out, rows = self.out, self.rows
        moved = [r.elapsed for r in rows if r.failover]
        dot = out.sym(" · ", ", ")

        def spread(values: list[float]) -> str:
            return f"p50 {ms(percentile(values, 0.5))}{dot}p99 {ms(percentile(values, 0.99))}"

        served = (f"{name} {sum(r.served == name for r in rows)}" for name in (PRIMARY, BACKUP))
        table = [
            ("calls", f"{len(rows)}, all answered (100 % success)"),
            ("served", dot.join(served)),
            ("failovers", f"{len(moved)} (marked {out.sym('↪', '*')})"),
            ("latency", spread([r.elapsed for r in rows])),
        ]
        if moved:
            table.append(("failover latency", spread(moved)))
        out.line()
        out.line(out.paint("summary", BOLD))
        for key, value in table:
            out.line(f"  {key:<17} {value}")


def run_demo(args: argparse.Namespace, out: Term) -> int:
    from .testing import FakeProvider  # the demo's only use of the test helpers

    seed = args.seed if args.seed is not None else random.randrange(10_000)
    lengths = phase_lengths(args.calls, random.Random(seed))
    logger = logging.getLogger("failover")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # the demo shows every failover itself
    arrow = out.sym("→", "->")
    out.line(
        out.paint(f"failover demo: {args.calls} calls, {PRIMARY} {arrow} {BACKUP}", BOLD)
        + out.paint(
            f"   (seed {seed}; breaker opens after 2 failures in a row or 25 % of "
            f"{DEMO_BREAKER.min_calls}+ calls, cooldown 0.5-1 s)",
            DIM,
        )
    )
    out.line(out.paint(COLUMNS, DIM))
    try:
        with FakeProvider(PRIMARY) as primary, FakeProvider(BACKUP) as backup:
            demo = Demo((primary, backup), out)
            demo.run(lengths, primary)
    except (failover.FailoverError, RuntimeError) as exc:  # never expected: say so plainly
        out.line(out.paint(f"demo failed: {exc}", RED))
        return 1
    finally:
        logger.setLevel(level)
    demo.summary()
    return 0


# -- check -----------------------------------------------------------------------


def probe(spec: Provider, url: str, timeout: float) -> tuple[str, bool]:
    """The provider's key as shown, and what listing its models gave."""
    variable = spec.api_key_env or "OPENAI_API_KEY"
    key = spec.api_key or os.environ.get(variable)
    if not key:
        return f"key missing (set {variable})", False
    started = time.monotonic()
    try:
        with openai.OpenAI(api_key=key, base_url=url, timeout=timeout, max_retries=0) as client:
            count = len(client.models.list().data)
    except openai.OpenAIError as exc:  # class and status only: messages may quote the key
        return f"{mask(key)}  error: {describe(exc)}  {ms(time.monotonic() - started)}", False
    return f"{mask(key)}  reachable ({count} models)  {ms(time.monotonic() - started)}", True


def run_check(args: argparse.Namespace, out: Term) -> int:
    err, specs = Term(sys.stderr), default_providers()
    urls = [spec.base_url or OPENAI_BASE_URL for spec in specs]
    name_width, url_width = max(len(s.name) for s in specs), max(map(len, urls))
    serving = 0
    for spec, url in zip(specs, urls, strict=True):
        err.status(f"probing {spec.name} at {url} …")
        result, ok = probe(spec, url, args.timeout)
        err.status("")
        serving += ok
        colour = GREEN if ok else RED if "error" in result else YELLOW
        out.line(f"{spec.name:<{name_width}}  {url:<{url_width}}  {out.paint(result, colour)}")
    return 0 if serving else 1


# -- chat ------------------------------------------------------------------------


def run_chat(args: argparse.Namespace, out: Term) -> int:
    err = Term(sys.stderr)
    events: list[failover.Event] = []
    written: list[str] = []  # what the current attempt has printed so far
    tried: list[str] = []  # the provider of each run of the body

    def show(text: str) -> None:
        written.append(text)
        out.stream.write(text)
        out.stream.flush()

    @failover.with_fallback(on_attempt=events.append)  # the zero-config chain
    def ask(client: openai.OpenAI | None = None) -> str:
        assert client is not None  # injected by @with_fallback
        tried.append(failover.current_provider() or "unknown")
        if written:  # a stream broke after printing: say so, and start the answer afresh
            show("\n")
            err.line(err.paint("(the stream broke; answer restarted on the next provider)", YELLOW))
            written.clear()
        return ask_once(client, args.model, args.prompt, args.stream, show)

    started = time.monotonic()
    try:
        answer = ask()
    except failover.FailoverError as exc:
        err.line(err.paint(f"failover: no provider answered (model {args.model})", RED))
        for attempt in exc.attempts:
            err.line(f"  {attempt.provider}: {explain(attempt.error)}")
        return 1
    except openai.OpenAIError as exc:  # not a provider fault (a refusal, say): no failover
        err.line(err.paint(f"failover: {tried[-1] if tried else 'chain'}: {explain(exc)}", RED))
        return 1
    out.line("" if args.stream else answer)
    note = "".join(f"; {e.provider} failed: {explain(e.error)}" for e in events if e.error)
    took = ms(time.monotonic() - started)
    err.line(err.paint(f"served by {tried[-1]} ({args.model}, {took}){note}", DIM))
    return 0


# -- entry point ------------------------------------------------------------------

N = TypeVar("N", int, float)


def at_least(low: N, kind: Callable[[str], N]) -> Callable[[str], N]:
    def parse(text: str) -> N:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failover", description="Keep LLM calls alive when a provider fails."
    )
    parser.add_argument("--version", action="version", version=f"failover {failover.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="watch calls fail over between two local fake providers (offline)",
        description="Take a fake primary down (HTTP 500, hang, cut stream), bring it back, "
        "and show that every call is served.",
    )
    demo.add_argument("--calls", type=at_least(len(PHASES), int), default=40, help="default: 40")
    demo.add_argument("--seed", type=int, help="make the phase lengths repeatable")
    demo.set_defaults(run=run_demo)
    check = commands.add_parser(
        "check",
        help="probe each configured provider (COMETAPI_KEY, OPENAI_API_KEY)",
        description="List the models of each provider of the zero-config chain. "
        "Exit 0 when at least one answers, 1 when none does.",
    )
    check.add_argument("--timeout", type=at_least(0.01, float), default=10.0, help="seconds (10)")
    check.set_defaults(run=run_check)
    chat = commands.add_parser(
        "chat",
        help="send one prompt through the zero-config chain",
        description="Print the answer on stdout, and which provider served it on stderr.",
    )
    chat.add_argument("prompt")
    chat.add_argument("--model", default="gpt-4o-mini", help="default: gpt-4o-mini")
    chat.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    chat.set_defaults(run=run_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Term], int] = args.run
    try:
        return run(args, Term(sys.stdout))
    except KeyboardInterrupt:
        return 130
