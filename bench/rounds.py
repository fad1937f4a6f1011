"""Repeated, interleaved rounds for the benchmarks: median and spread, never one lucky number.

A benchmark here measures *variants* (a backend, SQLite or PostgreSQL; and optionally the code
of another git ref beside this tree's) over ``--rounds`` rounds (>= 5). Within a round every
variant runs once, one after the other, so a change in the machine's load (this machine's 2
cores are shared) hits all variants alike instead of biasing one. Each measurement runs in a
fresh Python process (``<bench> --one-round JSON``), so nothing carries over between rounds or
variants, and ``--baseline REF`` runs the same benchmark code against ``git archive REF src``
(put first on ``PYTHONPATH``): before and after in one invocation, measured the same way.

PostgreSQL: one server for the whole invocation, from ``kubeline.testing.postgres`` (the one
the integration tests start, or ``KUBELINE_TEST_POSTGRES_URL``), and a fresh database per
measurement.

Reported per variant and figure: the median, the spread (min-max) and the spread relative to
the median, with the load average before and after: on a busy machine, read the spread first.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
ONE_ROUND = "--one-round"


@dataclasses.dataclass(frozen=True)
class Variant:
    backend: str  # sqlite | postgres
    code: str = "this tree"  # or the git ref of --baseline
    src: pathlib.Path | None = None  # PYTHONPATH for that code (None: the installed tree)
    setting: str = ""  # a benchmark's own dimension (e.g. "2 replicas"), measured in the same rounds

    @property
    def label(self) -> str:
        label = self.backend if self.src is None else f"{self.backend} @{self.code}"
        return f"{label} {self.setting}" if self.setting else label


@dataclasses.dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str = ""  # "ms" multiplies seconds by 1,000
    digits: int = 1


def add_arguments(parser: argparse.ArgumentParser, *, backends: str = "sqlite,postgres") -> None:
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (>= 5 for a reported figure)")
    parser.add_argument("--backends", default=backends)
    parser.add_argument("--baseline", metavar="REF", default="",
                        help="also measure the code of this git ref (e.g. main), interleaved with this tree")
    parser.add_argument("--round-timeout", type=float, default=600.0, help="seconds before a round is given up")
    parser.add_argument(ONE_ROUND, default="", help=argparse.SUPPRESS)


def one_round(args: argparse.Namespace, measure: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """In a round's child process: run ``measure`` and print its figures as JSON (True if so)."""
    if not args.one_round:
        return False
    figures = measure(json.loads(args.one_round))
    print(json.dumps(figures), flush=True)
    return True


@contextlib.contextmanager
def variants(args: argparse.Namespace, settings: Sequence[str] = ("",)) -> Iterator[list[Variant]]:
    """The variants to measure: ``--backends`` x [baseline code, this tree] x ``settings`` (a
    benchmark's own dimension, such as how many replicas, interleaved like the others)."""
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            raise SystemExit(f"unknown backend {backend!r}: use sqlite and/or postgres (--backends sqlite,postgres)")
    with contextlib.ExitStack() as stack:
        codes: list[tuple[str, pathlib.Path | None]] = []
        if args.baseline:
            codes.append((args.baseline, stack.enter_context(_archive(args.baseline))))
        codes.append(("this tree", None))
        yield [Variant(backend=b, code=code, src=src, setting=setting)
               for code, src in codes for b in backends for setting in settings]


@contextlib.contextmanager
def _archive(ref: str) -> Iterator[pathlib.Path]:
    folder = pathlib.Path(tempfile.mkdtemp(prefix="kubeline-baseline-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=False)
        if archive.returncode != 0:
            raise SystemExit(f"--baseline {ref}: git archive failed: {archive.stderr.decode()[-300:]}")
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
        yield folder / "src"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def databases(
    chosen: Sequence[Variant], work: pathlib.Path
) -> Iterator[Callable[[Variant], contextlib.AbstractContextManager[str]]]:
    """A factory of fresh, empty databases (a URL) per variant; one PostgreSQL server if needed."""
    with contextlib.ExitStack() as stack:
        server = None
        if any(v.backend == "postgres" for v in chosen):
            from kubeline.testing import postgres

            try:
                server = stack.enter_context(postgres.server())
            except postgres.Unavailable as exc:
                raise SystemExit(f"PostgreSQL unavailable: {exc} (or set {postgres.ENV_URL})") from None
        counter = iter(range(1_000_000))

        @contextlib.contextmanager
        def fresh(variant: Variant) -> Iterator[str]:
            if variant.backend == "sqlite":
                path = work / f"bench-{next(counter)}.db"
                try:
                    yield f"sqlite:///{path}"
                finally:
                    for suffix in ("", "-wal", "-shm"):
                        pathlib.Path(f"{path}{suffix}").unlink(missing_ok=True)
                return
            assert server is not None
            with server.database(prefix="kubeline_bench") as url:
                yield url

        yield fresh


def run_one(script: pathlib.Path, *, variant: Variant, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One measurement in a fresh process; its figures."""
    env = dict(os.environ)
    if variant.src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(variant.src), env.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), ONE_ROUND, json.dumps(params)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{variant.label}: the round failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def interleave(
    script: pathlib.Path, *, args: argparse.Namespace, chosen: Sequence[Variant],
    params: Callable[[Variant, str], dict[str, Any]], show: Callable[[dict[str, Any]], str],
) -> dict[Variant, list[dict[str, Any]]]:
    """``args.rounds`` rounds; in each, every variant once on a fresh database. Prints progress."""
    if args.rounds < 5:
        print(f"note: {args.rounds} rounds: fewer than 5, not a figure to report", flush=True)
    results: dict[Variant, list[dict[str, Any]]] = {v: [] for v in chosen}
    with tempfile.TemporaryDirectory(prefix="kubeline-bench-") as tmp, databases(chosen, pathlib.Path(tmp)) as fresh:
        for number in range(1, args.rounds + 1):
            for variant in chosen:
                with fresh(variant) as url:
                    t0 = time.perf_counter()
                    figures = run_one(script, variant=variant, params={**params(variant, url), "work": tmp},
                                      timeout=args.round_timeout)
                results[variant].append(figures)
                print(f"round {number}/{args.rounds} {variant.label:<24} {show(figures)} "
                      f"({time.perf_counter() - t0:.0f}s, load {os.getloadavg()[0]:.2f})", flush=True)
    return results


def report(results: dict[Variant, list[dict[str, Any]]], figures: Sequence[Figure]) -> None:
    """One line per variant and figure: median, spread (min-max), spread / median."""
    print(f"\n{'variant':<24} {'figure':<28} {'median':>10} {'spread (min-max)':>22} {'+-':>6}  rounds")
    for variant, rounds in results.items():
        for figure in figures:
            values = [float(r[figure.key]) for r in rounds if r.get(figure.key) is not None]
            if not values:
                continue
            scale = 1000.0 if figure.unit == "ms" else 1.0
            med = statistics.median(values) * scale
            low, high = min(values) * scale, max(values) * scale
            rel = (high - low) / med * 100 if med else 0.0
            unit = f" {figure.unit}" if figure.unit else ""
            spread = f"{low:.{figure.digits}f}-{high:.{figure.digits}f}{unit}"
            print(f"{variant.label:<24} {figure.title:<28} {med:>{10 - len(unit)}.{figure.digits}f}{unit} "
                  f"{spread:>22} {rel:>5.0f}%  {len(values)}")


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average {load} ({os.cpu_count()} CPUs, shared: figures are noisy, read the spread)"


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]
