"""The exception tree of Kubeline.

Every error a user can cause carries a message that says what is wrong and how to fix it.
Library code raises these; entry points (CLI, API) turn them into exit codes or responses::

    KubelineError
    ├── SpecError                 a pipeline folder or spec is invalid (carries every Problem)
    ├── NotFoundError             a pipeline, run, stage or secret does not exist
    ├── GoneError                 it existed and is gone for good (a run's deleted or lost log)
    ├── InvalidInputError         run inputs do not match the declared inputs
    ├── TransitionError           a state change the rules forbid (a bug or a race lost)
    ├── ConflictError             the change conflicts with the current state (e.g. cancel a finished run)
    │   └── LeaseLostError        a replica wrote for a run whose lease another replica took over (fencing)
    ├── SecretError               secret key missing, or a ciphertext that cannot be decrypted
    └── ExecutorError             an executor could not start, follow or stop an attempt
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with a pipeline: where (file + field path), what, and how to fix it."""

    file: str
    location: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: {self.location}: " if self.location else f"{self.file}: "
        return where + self.message + (f" ({self.hint})" if self.hint else "")


class KubelineError(Exception):
    """Base of every error Kubeline raises on purpose."""


class SpecError(KubelineError):
    """A pipeline is invalid. ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class NotFoundError(KubelineError):
    """Something named does not exist."""


class GoneError(KubelineError):
    """Something that existed is gone for good (a run's log deleted or lost); the message says why."""


class InvalidInputError(KubelineError):
    """Run inputs do not match what the pipeline declares."""


class TransitionError(KubelineError):
    """A state transition that the rules in ``domain.states`` forbid."""


class ConflictError(KubelineError):
    """The request conflicts with the current state of the object."""


class LeaseLostError(ConflictError):
    """A write made on behalf of a leased run carried a lease generation that is no longer the
    run's: another replica adopted the run (this one stalled past its lease, or restarted). The
    write did not happen; the replica that gets this stops driving the run and leaves it to the
    new owner."""

    def __init__(self, *, run_id: str, generation: int, current: int, owner: str | None) -> None:
        self.run_id, self.generation, self.current, self.owner = run_id, generation, current, owner
        super().__init__(
            f"run {run_id}: this process no longer holds its lease (it wrote with generation {generation}; the "
            f"run is now at generation {current}, owned by {owner or 'nobody'}), so the write was refused and the "
            f"run is left to its new owner. If this happens often, raise KUBELINE_LEASE_SECONDS or look at why "
            f"lease renewals are late (database latency, an overloaded event loop)")


class SecretError(KubelineError):
    """A secret cannot be stored or read (missing key, wrong key, corrupted ciphertext)."""


class ExecutorError(KubelineError):
    """An executor could not start, follow or stop an attempt."""
