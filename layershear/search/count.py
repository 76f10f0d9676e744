"""How many blocks a search removes: ``--ratio`` or ``--num-remove``, validated here and nowhere else."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from layershear.errors import LayershearError


def _check_choice(ratio: float | None, num: int | None) -> None:
    if (ratio is None) == (num is None):
        raise LayershearError("Give exactly one of --ratio (e.g. 0.25) or --num-remove (e.g. 8)")
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise LayershearError(f"--ratio must be in (0, 1), got {ratio}; e.g. --ratio 0.25 removes a quarter of the blocks")


def check_request(ratio: float | None = None, num: int | None = None) -> None:
    """Check a removal request before the model is known: exactly one of ``ratio`` in (0, 1) or ``num`` >= 1.

    Raises:
        LayershearError: neither or both given, ratio outside (0, 1), or ``num`` < 1.
    """
    _check_choice(ratio, num)
    if num is not None and num < 1:
        raise LayershearError(f"Cannot remove {num} blocks; --num-remove must be at least 1")


def check_count(num_remove: int, num_blocks: int) -> int:
    """``num_remove`` itself if 1 <= num_remove < num_blocks (at least one block must stay).

    Raises:
        LayershearError: otherwise.
    """
    if not 1 <= num_remove < num_blocks:
        raise LayershearError(f"Cannot remove {num_remove} of {num_blocks} blocks; choose between 1 and {num_blocks - 1}")
    return num_remove


def num_to_remove(num_blocks: int, *, ratio: float | None = None, num: int | None = None) -> int:
    """Blocks to remove from ``num_blocks``: ``num`` as given, or ``round(ratio * num_blocks)`` (halves up,
    so 0.25 of 30 blocks is 8).

    Raises:
        LayershearError: as :func:`check_request`, or a count outside [1, num_blocks - 1].
    """
    _check_choice(ratio, num)
    if ratio is not None:
        num = int((Decimal(str(ratio)) * num_blocks).to_integral_value(rounding=ROUND_HALF_UP))
    return check_count(num, num_blocks)
