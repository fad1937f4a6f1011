"""Secret masking: every secret value is replaced with ``***`` before a line reaches disk.

The same masking applies to what a stage hands back as data (outputs, its route, error
messages; ``Masker.data`` walks JSON values, keys included) before it is stored, so a secret a
stage writes as an output is stored and served as ``***``, like in its log.

Values shorter than three characters are not masked: masking ``1`` or ``a`` would shred every
line (and the pattern of ``***`` would reveal the value anyway), so such "secrets" give no
protection worth the damage. Multi-line secrets are masked line by line, because log text is
stored one line at a time. A secret split across a line that the executor had to cut at
``log_line_limit`` can only be masked in the parts that remain whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MIN_LENGTH = 3
MASK = "***"


class Masker:
    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for secret in secrets:
            for part in (secret, *secret.splitlines()):
                if len(part) >= MIN_LENGTH:
                    values.add(part)
        ordered = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def data(self, value: Any) -> Any:
        """``value`` (JSON: dicts, lists, strings, numbers...) with every string masked, keys too."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self._pattern.sub(MASK, value)
        if isinstance(value, dict):
            return {self.data(k) if isinstance(k, str) else k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool):
            text = str(value)
            masked = self._pattern.sub(MASK, text)
            return value if masked == text else masked  # a numeric secret written as a number
        return value
