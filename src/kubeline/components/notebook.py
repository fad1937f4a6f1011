"""``python -m kubeline.components.notebook FILE``: run a notebook stage with papermill.

Runs inside the pipeline's own virtualenv (Kubeline installs papermill and ipykernel there), so
the module imports only the standard library until ``main`` runs. What it adds to papermill:

* parameters: the stage config's ``parameters`` overlaid with the stage inputs (inputs win,
  they are the more specific, per-run values), injected after the cell tagged ``parameters``;
* the executed notebook is written to ``$KUBELINE_ARTIFACTS_DIR/FILE`` as it runs, so it is kept
  even when a cell fails or the attempt is killed;
* no progress bar: the cells' own output is streamed to stdout/stderr;
* per-cell retries as Fast-Flow gives them: the config key ``cells`` is a list whose item *i*
  applies to the *i*-th **code** cell (markdown cells and the injected parameters cell are not
  counted), or a mapping ``{"i": policy}`` with the same indexes; a code cell's own metadata
  ``fastflow: {retries, delay_seconds}`` overrides its entry; a cell is re-run in the same
  kernel, ``delay_seconds`` (default 1, as in Fast-Flow) after the failure;
* one log line per cell event in the format ``domain.cells`` parses (the API rebuilds each
  cell's status from the log; this module stays stdlib-only as it is copied into user venvs);
* the kernel is always this interpreter: a private kernelspec pointing at ``sys.executable``
  is put first on ``JUPYTER_PATH``, so a user-wide ``python3`` kernelspec cannot redirect the
  notebook to another Python.

A failing cell ends the process with exit code 1 and one line naming the cell and the exception.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubeline import task

KERNEL_NAME = "kubeline-python"


@dataclasses.dataclass(frozen=True)
class CellPolicy:
    retries: int = 0
    delay_seconds: float = 1.0  # Fast-Flow's default


@dataclasses.dataclass
class Failure:
    label: str
    line: str


class NotebookError(Exception):
    """The notebook could not run; the message is the attempt's error line."""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m kubeline.components.notebook NOTEBOOK.ipynb", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        run(pathlib.Path(args[0]))
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def run(source: pathlib.Path, *, log: Callable[[str], None] | None = None) -> pathlib.Path:
    """Execute ``source``; return the executed notebook's path or raise ``NotebookError``."""
    say = log or _log
    if not source.is_file():
        raise NotebookError(f"notebook {source} not found in {pathlib.Path.cwd()}")
    try:
        stage_config = task.config()
        stage_inputs = task.inputs()
    except RuntimeError as exc:
        raise NotebookError(str(exc)) from None
    parameters = parse_parameters(stage_config.get("parameters"))
    parameters.update(stage_inputs)
    policies = parse_cells(stage_config.get("cells"))
    kernel = stage_config.get("kernel")
    if kernel is not None and not isinstance(kernel, str):
        raise NotebookError(f"config.kernel must be a kernelspec name, not {kernel!r}")
    output = task.artifacts_dir() / source.name
    if output.resolve() == source.resolve():
        output = output.with_name(f"{source.stem}.output{source.suffix}")
    say(
        f"notebook {source}: {len(parameters)} parameters"
        f" ({', '.join(sorted(parameters)) or 'none'}); executed notebook -> {output}"
    )
    _execute(
        source=source,
        output=output,
        parameters=parameters,
        policies=policies,
        kernel=kernel,
        log=say,
    )
    return output


def parse_parameters(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise NotebookError(f"config.parameters must be an object of name -> value, not {raw!r}")
    return dict(raw)


def parse_cells(raw: Any) -> dict[int, CellPolicy]:
    """``[{"retries": 2}, {}]`` or ``{"0": {"retries": 2}}`` -> ``{0: CellPolicy(2, 1.0), ...}``.

    Keys and list positions are code-cell indexes (see the module docstring)."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        raw = {str(i): item for i, item in enumerate(raw)}
    if not isinstance(raw, dict):
        raise NotebookError(
            "config.cells must be a list of {retries, delay_seconds} (item i = code cell i)"
            f" or map code-cell indexes to them, not {raw!r}"
        )
    policies: dict[int, CellPolicy] = {}
    for key, value in raw.items():
        try:
            index = int(key)
            if index < 0:
                raise ValueError
            policies[index] = policy_of(value, base=CellPolicy())
        except (TypeError, ValueError):
            raise NotebookError(
                f"config.cells[{key!r}] = {value!r}: expected a code-cell index >= 0 with"
                " {retries: N >= 0, delay_seconds: S >= 0}"
            ) from None
    return policies


def policy_of(value: Any, *, base: CellPolicy) -> CellPolicy:
    """``base`` with what ``value`` (a cells entry or a cell's ``fastflow`` metadata) sets."""
    if value is None:
        return base
    if not isinstance(value, dict) or set(value) - {"retries", "delay_seconds"}:
        raise ValueError(value)
    retries = int(value.get("retries", base.retries))
    delay = float(value.get("delay_seconds", base.delay_seconds))
    if retries < 0 or delay < 0:
        raise ValueError(value)
    return CellPolicy(retries, delay)


def _execute(
    *,
    source: pathlib.Path,
    output: pathlib.Path,
    parameters: dict[str, Any],
    policies: dict[int, CellPolicy],
    kernel: str | None,
    log: Callable[[str], None],
) -> None:
    try:
        import papermill
        import papermill.engines
        import papermill.exceptions
    except ImportError:
        raise NotebookError(
            "papermill is not installed in the pipeline's virtualenv; Kubeline adds papermill and"
            " ipykernel for notebook stages, so keep them if you pin requirements yourself"
        ) from None
    failure: list[Failure] = []
    engine = _engine(policies=policies, log=log, failure=failure)
    papermill.engines.papermill_engines.register("kubeline", engine)
    with tempfile.TemporaryDirectory(prefix="kubeline-kernel-") as scratch:
        _use_private_kernelspec(pathlib.Path(scratch))
        try:
            papermill.execute_notebook(
                str(source),
                str(output),
                parameters=parameters,
                engine_name="kubeline",
                kernel_name=kernel or KERNEL_NAME,
                language=None if kernel else "python",
                progress_bar=False,
                log_output=False,
                stdout_file=sys.stdout,
                stderr_file=sys.stderr,
                cwd=str(pathlib.Path.cwd()),
            )
        except papermill.exceptions.PapermillExecutionError as exc:
            where = (
                failure[0]
                if failure
                else Failure(f"cell {exc.cell_index}", f"{exc.ename}: {exc.evalue}")
            )
            raise NotebookError(
                f"{source} failed in {where.label}: {where.line} (executed notebook: {output})"
            ) from None
        except NotebookError:
            raise
        except Exception as exc:  # kernel missing, notebook unreadable, parameters rejected
            line = str(exc).strip().splitlines()[-1:] or [""]
            raise NotebookError(
                f"{source} could not run: {type(exc).__name__}: {line[0]}"
            ) from None
    log(f"notebook {source}: all cells done; executed notebook saved to {output}")


def _engine(
    *, policies: dict[int, CellPolicy], log: Callable[[str], None], failure: list[Failure]
) -> type:
    """A papermill engine whose client logs each cell and retries the cells ``policies`` name."""
    import jupyter_client.manager
    import nbclient.exceptions
    import papermill.clientwrap
    import papermill.engines
    import papermill.utils

    class Client(papermill.clientwrap.PapermillNotebookClient):  # type: ignore[misc]
        def papermill_execute_cells(self) -> None:
            labels = _labels(self.nb.cells)
            for index, cell in enumerate(self.nb.cells):
                try:
                    self.nb_man.cell_start(cell, index)
                    if index in labels:
                        label, code_index = labels[index]
                        policy = CellPolicy(retries=0) if code_index is None else _cell_policy(
                            cell, code_index, policies=policies, label=label, log=log)
                        self._execute_with_retries(cell, index, label=label, policy=policy)
                    else:
                        self.execute_cell(cell, index)
                except nbclient.exceptions.CellExecutionError as exc:
                    self.nb_man.cell_exception(
                        self.nb.cells[index], cell_index=index, exception=exc
                    )
                    break
                finally:
                    self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)

        def _execute_with_retries(
            self, cell: Any, index: int, *, label: str, policy: CellPolicy
        ) -> None:
            for retry in range(policy.retries + 1):
                suffix = f" (retry {retry}/{policy.retries})" if retry else ""
                log(f"{label} started{suffix}")
                started = time.monotonic()
                try:
                    self.execute_cell(cell, index)
                except nbclient.exceptions.CellExecutionError as exc:
                    line = " ".join(f"{exc.ename}: {exc.evalue}".split())  # one log line
                    took = time.monotonic() - started
                    if retry < policy.retries:
                        log(
                            f"{label} failed in {took:.1f}s: {line};"
                            f" retrying in {policy.delay_seconds:g}s"
                        )
                        time.sleep(policy.delay_seconds)
                        cell.outputs = []
                        continue
                    log(f"{label} failed in {took:.1f}s: {line}")
                    failure.append(Failure(label, line))
                    raise
                log(f"{label} done in {time.monotonic() - started:.1f}s")
                return

    class IpcKernelManager(jupyter_client.manager.AsyncKernelManager):
        """Unix sockets in the private runtime dir: no TCP ports to collide or to expose."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(transport="ipc", **kwargs)

    class Engine(papermill.engines.NBClientEngine):  # type: ignore[misc]
        @classmethod
        def execute_managed_notebook(  # noqa: PLR0917 - papermill calls it positionally
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: float = 60,
            execution_timeout: float | None = None,
            **kwargs: Any,
        ) -> Any:
            kwargs = papermill.utils.remove_args(["input_path"], **kwargs)
            safe = papermill.utils.remove_args(["timeout", "startup_timeout"], **kwargs)
            final = papermill.utils.merge_kwargs(
                safe,
                timeout=execution_timeout or kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=papermill.engines.logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
                kernel_manager_class=IpcKernelManager,
            )
            return Client(nb_man, **final).execute()

    return Engine


def _labels(cells: Sequence[Any]) -> dict[int, tuple[str, int | None]]:
    """Executed index -> (log label, code-cell index) for every code cell; the parameters cell
    papermill injects has no code-cell index (it is not in the user's notebook)."""
    def injected(cell: Any) -> bool:
        return "injected-parameters" in cell.get("metadata", {}).get("tags", [])

    code = [i for i, cell in enumerate(cells) if cell.get("cell_type") == "code" and not injected(cell)]
    labels: dict[int, tuple[str, int | None]] = {
        executed: (f"cell {position + 1}/{len(code)} (cells[{position}])", position)
        for position, executed in enumerate(code)
    }
    for index, cell in enumerate(cells):
        if cell.get("cell_type") == "code" and injected(cell):
            labels[index] = ("parameters cell (injected)", None)
    return labels


def _cell_policy(
    cell: Any, code_index: int, *, policies: dict[int, CellPolicy], label: str,
    log: Callable[[str], None],
) -> CellPolicy:
    """The ``cells`` entry of this code cell, overridden by its ``fastflow`` metadata."""
    base = policies.get(code_index, CellPolicy())
    metadata = cell.get("metadata", {}).get("fastflow")
    try:
        return policy_of(metadata, base=base)
    except (TypeError, ValueError):
        log(
            f"{label}: metadata fastflow = {metadata!r} is not read (only retries >= 0 and"
            " delay_seconds >= 0 are); using the pipeline's cells entry"
        )
        return base


def _use_private_kernelspec(scratch: pathlib.Path) -> None:
    """Make ``KERNEL_NAME`` start this interpreter; keep Jupyter's runtime files out of $HOME."""
    spec = scratch / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    sys.executable,
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    "{connection_file}",
                    # the kernel's own log is shutdown noise ("KeyboardInterrupt caught in kernel")
                    # in an attempt's log; cell output and errors come over the protocol instead
                    "--IPKernelApp.log_level=CRITICAL",
                ],
                "display_name": "Python (Kubeline stage)",
                "language": "python",
                "metadata": {"debugger": False},
            }
        )
    )
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        filter(None, [str(scratch), os.environ.get("JUPYTER_PATH")])
    )
    os.environ.setdefault("JUPYTER_RUNTIME_DIR", str(scratch / "runtime"))
    os.environ.setdefault("IPYTHONDIR", str(scratch / "ipython"))
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")


def _log(message: str) -> None:
    print(message, flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Unwind (save the notebook, stop the kernel) when the executor cancels the attempt."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
