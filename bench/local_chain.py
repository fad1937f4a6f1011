"""Benchmark: a chain of 40 `python` stages (each computes fib(10)) on the local executor,
against 40 bare `python -c` subprocesses run one after another — the floor.

    .venv/bin/python bench/local_chain.py [--stages 40] [--repeat 3] [--executor local|local-warm]

``--executor`` names the executor in the pipeline (``local``: a fresh interpreter per stage;
``local-warm``: forked from a warm interpreter; without it the engine's default rule picks).

Prints total wall time of each, the per-stage overhead Kubeline adds and the ratio (target <= 1.5).
The first Kubeline run (which builds the pipeline's virtualenv) is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

FIB = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\nprint(fib(10))\n"


def make_pipeline(root: pathlib.Path, stages: int, executor: str | None = None) -> pathlib.Path:
    folder = root / "chain"
    folder.mkdir()
    (folder / "main.py").write_text(FIB)
    lines = [f"executor: {executor}"] if executor else []
    lines.append("stages:")
    for i in range(stages):
        dep = f", dependsOn: [s{i - 1}]" if i else ""
        lines.append(f"  - {{id: s{i}, type: python, file: main.py{dep}}}")
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    return folder


def bare_chain(python: str, stages: int) -> float:
    start = time.perf_counter()
    for _ in range(stages):
        subprocess.run([python, "-c", FIB], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


async def kubeline_chain(folder: pathlib.Path) -> tuple[float, str]:
    from kubeline import bootstrap
    from kubeline.pipelines import loader

    async with bootstrap.open_kubeline() as kl:
        pipeline = loader.load_folder(folder)
        await kl.store.upsert_pipeline(pipeline)
        # A server that has run anything is warm (venv memo, warm workers): so is the measured run.
        await kl.engine.execute((await kl.engine.submit(pipeline)).id)
        start = time.perf_counter()
        run = await kl.engine.submit(pipeline)
        final = await kl.engine.execute(run.id)
        return time.perf_counter() - start, final.state.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--executor", choices=["local", "local-warm"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubeline-bench-") as tmp:
        root = pathlib.Path(tmp)
        os.environ["KUBELINE_HOME"] = str(root / "home")
        folder = make_pipeline(root, args.stages, args.executor)
        warm, state = asyncio.run(kubeline_chain(folder))
        assert state == "succeeded", f"warm-up run ended {state}"
        from kubeline.executors import local_venvs  # noqa: F401  (the venv python is the fair floor)

        venv_python = next((root / "home" / "venvs").glob("*/bin/python"), pathlib.Path(sys.executable))
        ours, bare = [], []
        for _ in range(args.repeat):
            elapsed, state = asyncio.run(kubeline_chain(folder))
            assert state == "succeeded", state
            ours.append(elapsed)
            bare.append(bare_chain(str(venv_python), args.stages))
    k, b = statistics.median(ours), statistics.median(bare)
    print(f"stages: {args.stages}   repeats: {args.repeat}   executor: {args.executor or 'default rule'}"
          f"   warm-up (venv build): {warm:.2f}s   load: {os.getloadavg()[0]:.2f}")
    print(f"kubeline chain: {k:.3f}s (runs: {', '.join(f'{x:.3f}' for x in ours)})")
    print(f"bare python -c: {b:.3f}s (runs: {', '.join(f'{x:.3f}' for x in bare)})")
    print(f"overhead per stage: {(k - b) / args.stages * 1000:.1f} ms   ratio: {k / b:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
