"""Benchmark: the first run of a pipeline with heavy requirements, with and without pre-heating.

    .venv/bin/python bench/preheat.py [--rounds 5] [--cache warm|cold] [--requirements "pandas==2.2.3 ..."]

Each round makes two fresh Kubeline homes (no venvs) and, interleaved (the order alternates per
round), measures trigger -> run finished of a one-stage pipeline that imports its requirements:

- without: pre-heating off (``KUBELINE_PREHEAT_CONCURRENCY=0``): the run builds the venv;
- with: the pipelines folder is discovered (``services.reload_pipelines``, as a server start or a
  git sync does), the background build is let finish (its time is printed too), then the run.

The uv cache is controlled so "without" really installs: ``--cache warm`` (default) fills one
uv cache before the rounds and every venv installs from it (a real install into a new venv,
no network: a server's steady state); ``--cache cold`` gives every home its own empty uv cache
(downloads from PyPI each time: a fresh machine). Prints median and spread (min..max, stdev).
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

DEFAULT_REQUIREMENTS = "pandas==2.2.3 numpy==2.1.3 pyarrow==18.1.0"


def make_pipelines(root: pathlib.Path, requirements: list[str]) -> pathlib.Path:
    folder = root / "pipelines" / "heavy"
    folder.mkdir(parents=True)
    modules = [r.split("==")[0].split(">")[0].split("[")[0].replace("-", "_") for r in requirements]
    (folder / "main.py").write_text("".join(f"import {m}\n" for m in modules) + "print('ok')\n")
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (folder / "pipeline.yaml").write_text(f"python_version: '{sys.version_info.major}.{sys.version_info.minor}'\n")
    return folder.parent


async def first_run(home: pathlib.Path, *, pipelines: pathlib.Path, uv_cache: pathlib.Path,
                    preheat: bool) -> tuple[float, float]:
    """(seconds of pre-heating before the trigger, seconds from trigger to the run's end)."""
    from kubeline import bootstrap, settings
    from kubeline.api import services

    config = settings.Settings(home=home, pipelines_dir=pipelines, uv_cache_dir=uv_cache,
                               preheat_concurrency=1 if preheat else 0, executor="local")
    async with bootstrap.open_kubeline(config) as kl:
        started = time.perf_counter()
        await services.reload_pipelines(kl)
        assert kl.environments is not None
        await kl.environments.idle()
        heated = time.perf_counter() - started
        pipeline = await kl.store.get_pipeline("heavy")
        start = time.perf_counter()
        run = await kl.engine.submit(pipeline)
        final = await kl.engine.execute(run.id)
        took = time.perf_counter() - start
        if final.state.value != "succeeded":
            raise SystemExit(f"the run {run.id} {final.state.value}: {final.error}")
        return heated, took


def fill_cache(uv_cache: pathlib.Path, requirements: list[str], scratch: pathlib.Path) -> None:
    from kubeline.executors import local_venvs

    uv = local_venvs.find_uv()
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache)}
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(scratch)], check=True, env=env)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(scratch / "bin" / "python"), *requirements],
                   check=True, env=env)


def summary(name: str, values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{name:<28} median {statistics.median(values):7.2f} s   min {min(values):6.2f}   "
            f"max {max(values):6.2f}   stdev {spread:5.2f}   n={len(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cache", choices=["warm", "cold"], default="warm")
    parser.add_argument("--requirements", default=DEFAULT_REQUIREMENTS)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20:
        raise SystemExit("--rounds: 1..20 (each round installs the requirements twice)")
    requirements = args.requirements.split()
    without: list[float] = []
    with_: list[float] = []
    heating: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kubeline-bench-preheat-") as tmp:
        root = pathlib.Path(tmp)
        pipelines = make_pipelines(root, requirements)
        shared_cache = root / "uv-cache"
        if args.cache == "warm":
            print(f"filling one uv cache with {' '.join(requirements)} ...", flush=True)
            fill_cache(shared_cache, requirements, root / "fill")
        for i in range(args.rounds):
            order = [False, True] if i % 2 == 0 else [True, False]
            for preheat in order:
                home = root / f"home-{i}-{'with' if preheat else 'without'}"
                cache = shared_cache if args.cache == "warm" else home / "uv-cache"
                heated, took = asyncio.run(first_run(home, pipelines=pipelines, uv_cache=cache, preheat=preheat))
                (with_ if preheat else without).append(took)
                if preheat:
                    heating.append(heated)
                print(f"round {i + 1}: {'with' if preheat else 'without':<7} pre-heating: first run {took:6.2f} s"
                      + (f" (pre-heated in {heated:.2f} s before the trigger)" if preheat else ""), flush=True)
    print(f"\nrequirements: {' '.join(requirements)}; uv cache: {args.cache}; rounds: {args.rounds} (interleaved)")
    print(summary("first run, without", without))
    print(summary("first run, with pre-heating", with_))
    print(summary("pre-heating (background)", heating))
    print(f"median saving on the first run: {statistics.median(without) - statistics.median(with_):.2f} s")


if __name__ == "__main__":
    main()
