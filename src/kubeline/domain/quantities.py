"""CPU and memory quantities in Kubernetes notation, plus the Docker-style sizes Fast-Flow used.

Kubernetes: cpu ``100m``, ``0.5``, ``2``; memory ``128974848``, ``129e6``, ``129M``, ``123Mi``.
Docker (Fast-Flow ``mem_hard_limit``): ``512m`` means 512 MiB there, so it is only accepted through
``docker_memory_to_quantity``; in a Kubernetes quantity ``512m`` would mean 0.512 bytes.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(
    r"^([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$"
)
_DOCKER = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([bkmgtBKMGT])?[bB]?$")


def parse(value: str | int | float) -> Decimal:
    """The numeric value of a Kubernetes quantity; ``ValueError`` names what is accepted."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a quantity: use e.g. '100m' or '0.5' for CPU, '256Mi' or '1Gi' for memory"
        )
    number, exponent, suffix = match.groups()
    try:
        amount = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex already guarantees a number
        raise ValueError(f"{text!r} is not a quantity") from exc
    if exponent:
        return amount * (Decimal(10) ** int(exponent[1:]))
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    return amount * _DECIMAL[suffix or ""]


def cpu_cores(value: str | int | float) -> float:
    """CPU quantity as cores (``100m`` -> 0.1)."""
    cores = parse(value)
    if cores <= 0:
        raise ValueError(f"CPU {value!r} must be more than zero")
    return float(cores)


def memory_bytes(value: str | int | float) -> int:
    """Memory quantity as bytes (``1Gi`` -> 1073741824); fractions of a byte are refused."""
    amount = parse(value)
    if amount < 1:
        hint = " ('m' means milli in Kubernetes: for megabytes write 'M' or 'Mi')" if str(value).endswith("m") else ""
        raise ValueError(f"memory {value!r} is less than one byte{hint}")
    return int(amount)


def docker_memory_to_quantity(value: str | int) -> str:
    """Docker-style size (``512m``, ``1G``, ``1g``, ``2048``) as a Kubernetes quantity (``512Mi``)."""
    text = str(value).strip()
    match = _DOCKER.match(text)
    if not match:
        if _QUANTITY.match(text):
            return text  # already a Kubernetes quantity such as 512Mi
        raise ValueError(f"{text!r} is not a memory size: use e.g. '512m', '1g' or '512Mi'")
    number, unit = match.groups()
    unit = (unit or "b").lower()
    if unit == "b":
        return str(int(Decimal(number)))
    suffix = {"k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}[unit]
    amount = Decimal(number)
    if amount == amount.to_integral_value():
        return f"{int(amount)}{suffix}"
    scale = {"k": 1, "m": 2, "g": 3, "t": 4}[unit]
    return str(int(amount * (1024**scale)))


def format_bytes(amount: int) -> str:
    """A human size for messages: 1073741824 -> '1Gi'."""
    for suffix, size in reversed(_BINARY.items()):
        if amount >= size and amount % size == 0:
            return f"{amount // size}{suffix}"
    return f"{amount}B"
