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


class SecretError(KubelineError):
    """A secret cannot be stored or read (missing key, wrong key, corrupted ciphertext)."""


class ExecutorError(KubelineError):
    """An executor could not start, follow or stop an attempt."""
