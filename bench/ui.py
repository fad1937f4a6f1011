"""Web UI speed in headless Chromium against a real server holding 10,000 runs.

    .venv/bin/python bench/ui.py [--runs 10000] [--rounds 5] [--lines 200000] [--baseline REF]

Setup: a SQLite database gets ``--runs`` finished runs over the last 14 days (rows made by
``storage.sql.rows.run_to_row``, 20 pipelines, ~90 % succeeded), then ``kubeline server`` (a
child process, 127.0.0.1, local executor) serves it with the built UI. One more run of a shell
stage prints ``--lines`` lines.

Measured per round (rounds interleaved, a fresh browser context each, so nothing is cached):
- first paint of the dashboard: Chromium's first-contentful-paint (Paint Timing), the frame the
  browser presented, checked to come after the stat tiles were in the DOM (they need /api/v1/stats
  over the 10,000 runs; a MutationObserver inside the page notes when): the page renders in one
  pass with its data, so its first contentful frame is its meaningful one. The DOM time is printed
  too: the difference is style, layout, paint, raster and the wait for a frame;
- the same for a run's page (its title row with the run's data; the time its stage graph is in
  the DOM is printed too: the graph's layout code loads after the first paint);
  (both on a server with nothing running: the chatty run below starts after them)
- the log view while the 200,000-line log streams in by SSE: every long task (> 50 ms, the
  browser's Long Tasks API) and the frame intervals (requestAnimationFrame) until the last line
  is counted.
Besides wall-clock times, a Chrome trace (category ``toplevel``: each task of the page's main
thread with its thread CPU time) gives the main thread's CPU time until first paint and the CPU
time of each task while the log streams. On 2 shared cores a task is often descheduled: a
long task that used 5 ms of CPU is the machine's load, one that used 50 ms is the page's.
Printed: median and spread (min-max) over rounds; for the log view also the longest task over
all rounds and how many long tasks all rounds had. Targets (issue 15): first paint < 300 ms, no
long task > 50 ms in the log view.

``--baseline REF``: before and after in one invocation. ``git archive REF src ui`` is unpacked
aside, its UI built there (``npm ci`` + ``npm run build``), and a second server runs that code
(its ``src`` first on ``PYTHONPATH``: the server and the UI of REF) on a copy of the same seeded
database. Every round measures both, in alternating order, with the same browser and this
file's measurements, so the machine's load (2 shared cores) hits both alike.

Needs Debian's chromium (``apt-get install chromium``) and the built UI (``scripts/bootstrap``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import pathlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx

from kubeline import testing
from kubeline.domain import runs, specs, states
from kubeline.storage.sql import migrate, tables
from kubeline.storage.sql import rows as sql_rows
from kubeline.storage.sql import store as sql_store
from kubeline.ui import serve

CHROMIUM = "/usr/bin/chromium"
ROOT = pathlib.Path(__file__).resolve().parents[1]
WATCH = """
window.__marks = {};
const want = {dashboard: '[data-testid="tiles"]', run: '.title-row', run_graph: '[data-stage]'};
// Once a page's marker is in the DOM and Chromium reported its first contentful paint, a console
// line tells the bench (which waits for it outside the page: see measure()).
let painted = false;
const told = new Set();
const tell = () => {
  if (!painted) return;
  for (const k of Object.keys(window.__marks)) if (!told.has(k)) {
    told.add(k);
    console.debug('kubeline-bench:' + k);
  }
};
new PerformanceObserver((l) => { if (l.getEntriesByName('first-contentful-paint').length) { painted = true; tell(); } })
  .observe({type: 'paint', buffered: true});
new MutationObserver(() => {
  for (const [k, sel] of Object.entries(want))
    if (!window.__marks[k] && document.querySelector(sel)) { window.__marks[k] = performance.now(); tell(); }
}).observe(document, {subtree: true, childList: true});
window.__long = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); })
  .observe({type: 'longtask', buffered: true});
window.__frames = [];
let last = performance.now();
const tick = (t) => { window.__frames.push(t - last); last = t; requestAnimationFrame(tick); };
requestAnimationFrame(tick);
"""

# Where a page's time went (Navigation and Resource Timing, ms from navigation start): the HTML,
# the main script and style, each API call (when it started and when its answer was in).
BREAKDOWN = """() => {
  const out = {};
  const nav = performance.getEntriesByType('navigation')[0];
  out['html in'] = nav.responseEnd;
  out['DOMContentLoaded'] = nav.domContentLoadedEventEnd;
  for (const e of performance.getEntriesByType('resource')) {
    const url = new URL(e.name);
    let key = url.pathname;
    if (key.startsWith('/assets/')) key = key.replace(/-[A-Za-z0-9_-]{8}\\./, '.');
    else if (!key.startsWith('/api/')) continue;
    key = key.replace(/\\/[0-9a-f]{22}(?=\\/|$)/, '/{id}');
    if (out[key + ' start'] !== undefined) continue;
    out[key + ' start'] = e.startTime;
    out[key + ' in'] = e.responseEnd;
  }
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  if (fcp) out['first contentful paint'] = fcp.startTime;
  return out;
}"""


async def seed(url: str, count: int) -> None:
    import sqlalchemy as sa

    store = await sql_store.SqlStore.open(url)
    try:
        spec = specs.PipelineSpec.model_validate({"stages": [{"id": "work", "type": "shell", "command": "true"}]})
        template = sql_rows.run_to_row(runs.Run(id="x", pipeline="p", spec=spec))
        rng = random.Random(15)
        now_ms = int(time.time() * 1000) - 60_000
        span_ms = 14 * 24 * 3600 * 1000
        batch = []
        for i in range(count):
            ms = now_ms - span_ms + int(i * span_ms / count)
            created = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
            roll = rng.random()
            state = states.RunState.SUCCEEDED if roll < 0.9 else states.RunState.FAILED if roll < 0.98 \
                else states.RunState.CANCELLED
            batch.append({**template, "id": f"{ms:012x}{rng.getrandbits(40):010x}",
                          "pipeline": f"pipeline-{i % 20:02d}", "state": state.value, "created_at": created,
                          "started_at": created, "finished_at": created + dt.timedelta(seconds=rng.uniform(0.5, 90)),
                          "error": "" if state is states.RunState.SUCCEEDED else f"stage 'work' {state.value}"})
        def insert(conn: sa.Connection) -> None:
            for start in range(0, len(batch), 1000):
                conn.execute(sa.insert(tables.runs), batch[start:start + 1000])

        await store.database.run(insert, write=True)
    finally:
        await store.close()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ms  ({min(values):.1f}-{max(values):.1f})"


TRACE_CATEGORIES = ["toplevel", "blink.user_timing"]
TASK = "ThreadControllerImpl::RunTask"  # a task of a thread's run loop (category toplevel)


def main_thread_tasks(trace: bytes, origin: str) -> tuple[float, list[tuple[float, float, float]]]:
    """From a Chrome trace: the trace time (us) of the last navigation to ``origin`` in it (0.0
    when none), and every top-level task of that renderer's main thread as (start us, wall ms,
    thread CPU ms)."""
    events = json.loads(trace)["traceEvents"]
    navigations = [e for e in events if e.get("name") == "navigationStart"
                   and str(e.get("args", {}).get("data", {}).get("documentLoaderURL", "")).startswith(origin)]
    threads = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
               and e.get("args", {}).get("name") == "CrRendererMain"}
    counts: dict[tuple[int, int], int] = {}
    for e in events:
        if e.get("name") == TASK and (e.get("pid"), e.get("tid")) in threads:
            counts[(e["pid"], e["tid"])] = counts.get((e["pid"], e["tid"]), 0) + 1
    if navigations:
        pid = navigations[-1]["pid"]
        counts = {k: v for k, v in counts.items() if k[0] == pid}
    if not counts:
        return 0.0, []
    main = max(counts, key=lambda k: counts[k])
    tasks, end = [], 0.0
    for e in sorted((e for e in events if e.get("name") == TASK and e.get("ph") == "X"
                     and (e["pid"], e["tid"]) == main), key=lambda e: e["ts"]):
        if e["ts"] >= end:  # not nested in the previous task
            tasks.append((float(e["ts"]), e.get("dur", 0) / 1000, e.get("tdur", 0) / 1000))
            end = e["ts"] + e.get("dur", 0)
    return (float(navigations[-1]["ts"]) if navigations else 0.0), tasks


PASSWORD = "bench-ui-password"


def logged_in(browser: Any, base: str) -> Any:
    """A browser context with a session cookie of the bench's admin user (as a person who logged in)."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.request.post(f"{base}/api/v1/auth/login", data={"username": "bench", "password": PASSWORD}).dispose()
    return context


FCP = "performance.getEntriesByName('first-contentful-paint')[0]?.startTime"


def measure(browser: Any, server: testing.ServerProcess, run_id: str, lines: int) -> dict[str, float]:
    out: dict[str, float] = {}
    base = server.url
    for name, path in (("dashboard", "/"), ("run", f"/runs/{run_id}")):
        context = logged_in(browser, base)
        page = context.new_page()
        page.add_init_script(WATCH)
        browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
        # Nothing of Playwright runs in the page until it painted: goto returns once the navigation
        # commits, and the page tells of its paint by a console line. (Waiting for the load event
        # and then polling with wait_for_function compiled Playwright's injected script, 20-35 ms
        # of the page's main thread, at about the time of the first paint.)
        told = f"kubeline-bench:{name}"
        with page.expect_console_message(lambda m, told=told: m.text == told, timeout=30_000):
            page.goto(base + path, wait_until="commit")
        navigated, tasks = main_thread_tasks(browser.stop_tracing(), base)
        out[f"{name}_dom"] = page.evaluate(f"window.__marks['{name}']")
        out[f"{name}_paint"] = page.evaluate(FCP)
        if out[f"{name}_paint"] < out[f"{name}_dom"]:
            sys.exit(f"{name}: Chromium's first contentful paint came before the page's data was in the DOM "
                     f"({out[f'{name}_paint']:.0f} < {out[f'{name}_dom']:.0f} ms): it is no longer the meaningful "
                     "paint; measure that page's data by Element Timing instead")
        if navigated:
            until = navigated + out[f"{name}_paint"] * 1000
            out[f"{name}_cpu"] = sum(cpu for start, _, cpu in tasks if navigated <= start < until)
        if name == "run":  # drawn after the first paint (its layout code loads then)
            page.wait_for_function("window.__marks['run_graph'] !== undefined", timeout=30_000)
            out["run_graph"] = page.evaluate("window.__marks['run_graph']")
        for key, value in page.evaluate(BREAKDOWN).items():
            out[f"{name}:{key}"] = value
        context.close()
    # The chatty run starts only now: the first paints are measured on a server that is not
    # also taking in a big log.
    log_run = httpx.post(f"{base}/api/v1/runs", json={"pipeline": "chatty"}, headers=server.headers).json()["id"]
    context = logged_in(browser, base)
    page = context.new_page()
    page.add_init_script(WATCH)
    page.goto(f"{base}/runs/{log_run}")
    page.wait_for_function("() => document.querySelector('[data-testid=log-count]')", timeout=30_000)
    page.evaluate("window.__long = []; window.__frames = []")
    browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    started = time.perf_counter()
    page.wait_for_function(f"() => document.querySelector('[data-testid=log-count]').textContent"
                           f".replace(/[^0-9]/g, '') >= {lines}", timeout=300_000, polling=200)
    out["stream_seconds"] = time.perf_counter() - started
    _, tasks = main_thread_tasks(browser.stop_tracing(), base)
    if tasks:
        cpus = sorted(cpu for _, _, cpu in tasks)
        out["task_cpu_max"] = cpus[-1]
        out["task_cpu_p99"] = cpus[int(len(cpus) * 0.99)]
        out["task_cpu_total"] = sum(cpus)
        longest = max(tasks, key=lambda t: t[1])
        out["longest_task_cpu"] = longest[2]
    long_tasks = page.evaluate("window.__long")
    frames = [f for f in page.evaluate("window.__frames") if f > 0]
    out["longest_task"] = max(long_tasks, default=0.0)
    out["long_tasks"] = float(len(long_tasks))
    out["frame_p50"] = statistics.median(frames) if frames else 0.0
    out["frame_p99"] = sorted(frames)[int(len(frames) * 0.99)] if frames else 0.0
    out["frame_max"] = max(frames, default=0.0)
    context.close()
    return out


@dataclasses.dataclass
class Variant:
    label: str
    src: pathlib.Path | None = None  # PYTHONPATH for that code (None: this tree)
    results: list[dict[str, float]] = dataclasses.field(default_factory=list)


def build_baseline(ref: str, folder: pathlib.Path) -> pathlib.Path:
    """``ref``'s src and ui unpacked in ``folder``, its UI built there; its src folder."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src", "ui"], capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"--baseline {ref}: git archive failed: {archive.stderr.decode()[-300:]}")
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    t0 = time.perf_counter()
    for command in (["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
                    ["npm", "run", "--silent", "build"]):
        done = subprocess.run(command, cwd=folder / "ui", capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"--baseline {ref}: {' '.join(command)} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    if not serve.is_built(folder / "src" / "kubeline" / "ui" / "static"):
        sys.exit(f"--baseline {ref}: its UI build left no index.html")
    print(f"built the UI of {ref} in {time.perf_counter() - t0:.0f}s")
    return folder / "src"


def head_of(src: pathlib.Path) -> str:
    """The head revision of the migration scripts in ``src`` (a baseline's tree)."""
    from alembic import script

    head = script.ScriptDirectory(str(src / "kubeline" / "storage" / "sql" / "migrations")).get_current_head()
    if head is None:
        sys.exit(f"no migration scripts in {src}")
    return head


def show(variant: Variant, lines: int) -> None:
    results = variant.results
    print(f"\n[{variant.label}]")
    for page, label in (("dashboard", "dashboard"), ("run", "run page")):
        print(f"{label} first paint (Chromium FCP)  {spread([r[f'{page}_paint'] for r in results])}")
        print(f"  data in the DOM (page's marker)  {spread([r[f'{page}_dom'] for r in results])}")
        print(f"  DOM -> paint                     {spread([r[f'{page}_paint'] - r[f'{page}_dom'] for r in results])}")
        if cpu := [r[f"{page}_cpu"] for r in results if f"{page}_cpu" in r]:  # (no navigation in a trace: none)
            print(f"  main-thread CPU until paint      {spread(cpu)}"
                  + (f"  ({len(cpu)} of {len(results)} rounds)" if len(cpu) < len(results) else ""))
        if page == "run":
            print(f"  stage graph in the DOM           {spread([r['run_graph'] for r in results])}")
    for page in ("dashboard", "run"):
        print(f"  {page} breakdown (ms from navigation start):")
        keys = sorted({k for r in results for k in r if k.startswith(page + ":")},
                      key=lambda k: statistics.median([r.get(k, 0.0) for r in results]))
        for key in keys:
            print(f"    {key.split(':', 1)[1]:<40} {spread([r[key] for r in results if key in r])}")
    print(f"log view, {lines:,} lines streaming:")
    print(f"  longest task                     {spread([r['longest_task'] for r in results])}")
    print(f"  long tasks (> 50 ms), all rounds {sum(r['long_tasks'] for r in results):8.0f}  "
          f"(in {sum(1 for r in results if r['long_tasks'])} of {len(results)} rounds; "
          f"longest over all rounds {max(r['longest_task'] for r in results):.0f} ms)")
    if all("task_cpu_max" in r for r in results):
        print(f"  CPU of the longest task          {spread([r['longest_task_cpu'] for r in results])}")
        print(f"  task CPU, max                    {spread([r['task_cpu_max'] for r in results])}"
              f"  (over all rounds {max(r['task_cpu_max'] for r in results):.1f} ms)")
        print(f"  task CPU, p99                    {spread([r['task_cpu_p99'] for r in results])}")
        print(f"  main-thread CPU, whole stream    {statistics.median([r['task_cpu_total'] for r in results]):8.0f} ms")
    print(f"  frame interval p50               {spread([r['frame_p50'] for r in results])}")
    print(f"  frame interval p99               {spread([r['frame_p99'] for r in results])}")
    print(f"  stream wall time                 {statistics.median([r['stream_seconds'] for r in results]):8.1f} s")


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--baseline", metavar="REF", default="",
                        help="also measure the server and UI of this git ref, interleaved with this tree")
    args = parser.parse_args()
    # The UI this tree serves is built from ui/ by scripts/bootstrap, and only when it runs: a
    # checkout updated since (git pull, a merge) served its previous build and measured that.
    subprocess.run([str(ROOT / "scripts" / "bootstrap")], check=True, stdout=subprocess.DEVNULL)
    if not pathlib.Path(CHROMIUM).exists() or not serve.is_built():
        sys.exit("needs /usr/bin/chromium (apt-get install chromium) and the built UI (scripts/bootstrap)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="kubeline-bench-ui-") as tmp, contextlib.ExitStack() as stack:
        work = pathlib.Path(tmp)
        variants = [Variant("this tree")]
        if args.baseline:
            (work / "baseline").mkdir()
            variants.insert(0, Variant(f"@{args.baseline}", build_baseline(args.baseline, work / "baseline")))
        pipes = work / "pipelines"
        (pipes / "chatty").mkdir(parents=True)
        (pipes / "chatty" / "pipeline.yaml").write_text(
            "stages:\n  - {id: talk, type: shell, command: 'seq 1 " + str(args.lines) + " | sed \"s/^/log line /\"'}\n")
        seeded = work / "seeded.db"
        t0 = time.perf_counter()
        asyncio.run(seed(f"sqlite+aiosqlite:///{seeded}", args.runs))
        print(f"seeded {args.runs:,} runs in {time.perf_counter() - t0:.1f}s")
        servers = {}
        for number, variant in enumerate(variants):
            home = work / f"home-{number}"
            home.mkdir()
            shutil.copy(seeded, home / "kubeline.db")
            if variant.src is not None:  # a database the baseline knows: this tree's migrations it lacks undone
                asyncio.run(migrate.downgrade(f"sqlite+aiosqlite:///{home / 'kubeline.db'}",
                                              revision=head_of(variant.src)))
            env = {"KUBELINE_HOME": str(home), "KUBELINE_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'kubeline.db'}",
                   "KUBELINE_PIPELINES_DIR": str(pipes)}
            if variant.src is not None:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(variant.src), os.environ.get("PYTHONPATH", "")]))
            server = stack.enter_context(testing.ServerProcess(env=env, log_file=home / "server.log"))
            server.login_as("bench", "admin", password=PASSWORD)
            servers[variant.label] = server
        some_run = httpx.get(f"{servers['this tree'].url}/api/v1/runs", params={"limit": 1},
                             headers=servers["this tree"].headers).json()["items"][0]["id"]
        print(f"{args.rounds} interleaved rounds; load average {load()} ({os.cpu_count()} CPUs, shared)", flush=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
            for number in range(args.rounds):
                for variant in variants if number % 2 == 0 else variants[::-1]:
                    r = measure(browser, servers[variant.label], some_run, args.lines)
                    variant.results.append(r)
                    print(f"round {number + 1}/{args.rounds} {variant.label:<16} "
                          f"FCP dashboard {r['dashboard_paint']:5.0f} ms  run {r['run_paint']:5.0f} ms  "
                          f"long tasks {r['long_tasks']:2.0f}, longest {r['longest_task']:4.0f} ms "
                          f"(CPU {r.get('longest_task_cpu', 0.0):4.1f} ms)"
                          f"  (load {load()})", flush=True)
            browser.close()
    print(f"\nheadless Chromium, 1280x720, {args.runs:,} runs in SQLite, {args.rounds} rounds (median, min-max); "
          f"load average at the end {load()}")
    for variant in variants:
        show(variant, args.lines)


if __name__ == "__main__":
    main()
