"""What a request costs and how credits are read and written, exactly, in integer hundredths of a credit.

One 1024x1024 image at medium quality costs 1 credit (100 hundredths). A request costs
count * quality_weight * (W*H / 1048576) credits, rounded up to the next hundredth. No binary floats are used.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import cast

log = logging.getLogger(__name__)

HUNDREDTHS = 100
# Pixels of the 1024x1024 image that one credit buys at weight 1.
REFERENCE_PIXELS = 1024 * 1024
MAX_CREDITS = 10**12
# A weight this large would make a single request cost more than any limit anyone can set.
MAX_WEIGHT = 1_000_000
MAX_WEIGHT_PLACES = 6

QUALITIES: tuple[str, ...] = ("low", "medium", "high")

# A moderator's number: an optional sign, digits, optionally a dot and more digits. No exponents or separators.
_PLAIN_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$", re.ASCII)
_MAX_TEXT = 40


class CreditsFormatError(ValueError):
    """A credits value a moderator gave that cannot be used; ``message`` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_weight(text: str) -> Fraction:
    """A quality weight written as a decimal number, exactly; ValueError saying what is wrong otherwise.

    At most ``MAX_WEIGHT_PLACES`` decimal places: "1e-5000000" would otherwise become a fraction with a
    five-million-digit denominator (seconds to build, and to use in every request's cost).
    """
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"must be a number greater than 0, such as 0.25 or 4, not {text!r}") from None
    if not value.is_finite() or value <= 0 or value > MAX_WEIGHT:
        raise ValueError(f"must be a number greater than 0 and at most {MAX_WEIGHT}, not {text!r}")
    _, digits, exponent = value.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))  # "1.0000000" has no places
    if cast(int, exponent) + trailing_zeros < -MAX_WEIGHT_PLACES:
        raise ValueError(f"may have at most {MAX_WEIGHT_PLACES} decimal places, not {text!r}")
    return Fraction(value)


def _parse_weight(name: str, text: str | None, default: Fraction) -> Fraction:
    if text is None or not text.strip():
        return default
    try:
        return parse_weight(text)
    except ValueError as error:
        raise ValueError(f"{name} {error}") from None


@dataclass(frozen=True, slots=True)
class QualityWeights:
    """Credits per 1024x1024-equivalent image at each quality, as exact fractions."""

    low: Fraction = Fraction(1, 4)
    medium: Fraction = Fraction(1)
    high: Fraction = Fraction(4)

    @classmethod
    def parse(cls, low: str | None, medium: str | None, high: str | None) -> QualityWeights:
        """Build from the QUALITY_WEIGHT_LOW / _MEDIUM / _HIGH values; None or blank keeps the default.

        Raises ValueError naming the variable when a value is not a finite decimal number greater than 0.
        """
        defaults = cls()
        return cls(
            low=_parse_weight("QUALITY_WEIGHT_LOW", low, defaults.low),
            medium=_parse_weight("QUALITY_WEIGHT_MEDIUM", medium, defaults.medium),
            high=_parse_weight("QUALITY_WEIGHT_HIGH", high, defaults.high),
        )

    def weight(self, quality: str) -> Fraction:
        """The weight of ``quality`` (``"low"``, ``"medium"`` or ``"high"``); ValueError for anything else."""
        if quality == "low":
            return self.low
        if quality == "medium":
            return self.medium
        if quality == "high":
            return self.high
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, not {quality!r}")


def request_cost(*, width: int, height: int, quality: str, count: int, weights: QualityWeights) -> int:
    """The cost of a request in hundredths of a credit, computed exactly and rounded up to the next hundredth."""
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, not {width}x{height}")
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    weight = weights.weight(quality)
    # count * weight * (W*H / REFERENCE_PIXELS) * HUNDREDTHS, rounded up, in integers (exact, and cheaper
    # than Fraction arithmetic on every request).
    numerator = count * weight.numerator * width * height * HUNDREDTHS
    return -(-numerator // (weight.denominator * REFERENCE_PIXELS))


def parse_credits(value: str | int | float | Decimal) -> int:
    """Read a moderator's credits value (``"2"``, ``"1.5"``, ``2.25``) as integer hundredths.

    Accepts numbers from 0 to 10**12 with at most two decimals. A float (Discord's NUMBER option) is read through
    its shortest representation, so 0.1 is exactly one tenth. Raises CreditsFormatError with a plain message.
    """
    number = _as_decimal(value)
    if not number.is_finite():
        raise CreditsFormatError("Credits must be an ordinary number, like 5 or 2.5.")
    if number < 0:
        raise CreditsFormatError("Credits cannot be negative; use 0 to allow nothing.")
    if number > MAX_CREDITS:
        raise CreditsFormatError(f"That is too many credits; the most that can be set is {MAX_CREDITS:,}.")
    # Read the digits directly: Decimal arithmetic rounds to 28 digits, which could hide a third decimal.
    _, digits, exponent_or_flag = number.as_tuple()
    exponent = cast(int, exponent_or_flag)  # an int for every finite number
    coefficient = int("".join(map(str, digits)))
    while exponent < -2 and coefficient and coefficient % 10 == 0:
        coefficient //= 10
        exponent += 1
    if coefficient == 0:
        return 0
    if exponent < -2:
        raise CreditsFormatError("Credits can have at most two decimals, like 1.25.")
    return coefficient * 10 ** (exponent + 2)


def _as_decimal(value: str | int | float | Decimal) -> Decimal:
    if isinstance(value, bool):
        raise CreditsFormatError("Credits must be a number, like 5 or 2.5.")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CreditsFormatError("Credits must be an ordinary number, like 5 or 2.5.")
        # repr() is the shortest text that reads back as the same float: 0.1 -> "0.1".
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        return value
    text = value.strip()
    if len(text) > _MAX_TEXT or not _PLAIN_NUMBER.match(text):
        raise CreditsFormatError("Credits must be a number written with digits and an optional dot, like 5 or 2.5.")
    return Decimal(text)


def format_credits(hundredths: int) -> str:
    """Write hundredths as credits without trailing zeros or separators: 150 -> "1.5", 100 -> "1", -50 -> "-0.5"."""
    sign = "-" if hundredths < 0 else ""
    whole, fraction = divmod(abs(hundredths), HUNDREDTHS)
    if fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:02d}".rstrip("0")


def credits_text(hundredths: int) -> str:
    """An amount in words: ``1 credit``, ``2.5 credits``."""
    return f"{format_credits(hundredths)} credit" + ("" if hundredths == 100 else "s")
