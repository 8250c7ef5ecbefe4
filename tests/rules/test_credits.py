"""Credits: exact request costs, reading a moderator's number, writing hundredths back as credits."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imaginebot.credits import (
    HUNDREDTHS,
    CreditsFormatError,
    QualityWeights,
    credits_text,
    format_credits,
    parse_credits,
    request_cost,
)

DEFAULT = QualityWeights()


# --- request_cost ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "quality", "count", "hundredths"),
    [
        (1024, 1024, "medium", 1, 100),  # the contract's unit
        (1024, 1024, "low", 1, 25),
        (1024, 1024, "high", 10, 4000),
        (1536, 1024, "medium", 1, 150),
        (1536, 1024, "low", 1, 38),  # 0.375 rounds up to 0.38
        (1024, 640, "low", 1, 16),  # 0.15625 -> 0.16
        (3840, 2160, "high", 10, 31641),  # 316.40625 -> 316.41
        (1040, 1024, "medium", 1, 102),  # 1.015625 -> 1.02
    ],
)
def test_request_cost_examples(width: int, height: int, quality: str, count: int, hundredths: int) -> None:
    assert request_cost(width=width, height=height, quality=quality, count=count, weights=DEFAULT) == hundredths


def test_request_cost_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="quality"):
        request_cost(width=1024, height=1024, quality="ultra", count=1, weights=DEFAULT)
    with pytest.raises(ValueError, match="count"):
        request_cost(width=1024, height=1024, quality="low", count=0, weights=DEFAULT)
    with pytest.raises(ValueError, match="positive"):
        request_cost(width=0, height=1024, quality="low", count=1, weights=DEFAULT)


weight_texts = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(1000), places=4).map(str)


@settings(max_examples=300)
@given(
    st.integers(1, 3840),
    st.integers(1, 3840),
    st.sampled_from(["low", "medium", "high"]),
    st.integers(1, 10),
    weight_texts,
    weight_texts,
    weight_texts,
)
def test_request_cost_is_exact_and_never_undercharges(
    width: int, height: int, quality: str, count: int, low: str, medium: str, high: str
) -> None:
    weights = QualityWeights.parse(low, medium, high)
    weight_text = {"low": low, "medium": medium, "high": high}[quality]
    with localcontext() as context:
        context.prec = 100  # every value here is a terminating decimal well within 100 digits: exact
        exact = Decimal(count) * Decimal(weight_text) * Decimal(width * height) / Decimal(1_048_576) * 100
        expected = int(exact.to_integral_value(rounding=ROUND_CEILING))
    cost = request_cost(width=width, height=height, quality=quality, count=count, weights=weights)
    assert cost == expected
    assert isinstance(cost, int)
    assert Decimal(cost) >= exact > Decimal(cost - 1)


# --- QualityWeights --------------------------------------------------------------------------------------------------


def test_quality_weights_default_to_the_contract() -> None:
    for weights in (QualityWeights(), QualityWeights.parse(None, None, None), QualityWeights.parse("", " ", "")):
        assert (weights.low, weights.medium, weights.high) == (Fraction(1, 4), Fraction(1), Fraction(4))
        assert weights.weight("medium") == 1


def test_quality_weights_are_read_exactly() -> None:
    weights = QualityWeights.parse("0.1", "1.5", " 3 ")
    assert (weights.low, weights.medium, weights.high) == (Fraction(1, 10), Fraction(3, 2), Fraction(3))


def test_zeros_after_the_last_digit_are_not_decimal_places() -> None:
    weights = QualityWeights.parse("0.2500000000", "1.0000000", "4.000000000000000000000000000000000")
    assert (weights.low, weights.medium, weights.high) == (Fraction(1, 4), Fraction(1), Fraction(4))


@pytest.mark.parametrize(
    "bad",
    ["0", "-1", "abc", "nan", "inf", "1,5", "2000000", "1e-5000000", "0.0000001", "1.00000000000000000000000000001"],
)
@pytest.mark.parametrize(
    ("position", "name"), [(0, "QUALITY_WEIGHT_LOW"), (1, "QUALITY_WEIGHT_MEDIUM"), (2, "QUALITY_WEIGHT_HIGH")]
)
def test_a_bad_weight_is_refused_naming_its_variable(bad: str, position: int, name: str) -> None:
    texts: list[str | None] = [None, None, None]
    texts[position] = bad
    with pytest.raises(ValueError, match=name):
        QualityWeights.parse(*texts)


def test_an_unknown_quality_has_no_weight() -> None:
    with pytest.raises(ValueError, match="low, medium, high"):
        DEFAULT.weight("ultra")


# --- parse_credits / format_credits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hundredths"),
    [
        ("2", 200),
        ("1.50", 150),
        ("1.5", 150),
        (" 0.25 ", 25),
        ("0", 0),
        (".5", 50),
        ("1.", 100),
        ("+3", 300),
        ("1.500000", 150),
        (7, 700),
        (0.1, 10),  # a float is read through its shortest form, not 0.1000000000000000055...
        (0.29, 29),  # 0.29 * 100 is 28.999999999999996 in binary floats
        (2.5, 250),
        (1e12, 10**14),
        (Decimal("12.34"), 1234),
        (Decimal("0E-1000000"), 0),
        ("1000000000000", 10**14),
    ],
)
def test_parse_credits_reads_exact_hundredths(value: str | int | float | Decimal, hundredths: int) -> None:
    assert parse_credits(value) == hundredths


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("1.005", "two decimals"),
        (1.005, "two decimals"),
        (Decimal("1.005"), "two decimals"),
        # 31 significant digits: Decimal's default 28-digit arithmetic would round the third decimal away.
        (Decimal("1.000000000000000000000000000001"), "two decimals"),
        (Decimal("1E-1000000"), "two decimals"),
        (1e-05, "two decimals"),
        ("-1", "negative"),
        (-0.5, "negative"),
        (Decimal(-2), "negative"),
        (float("nan"), "number"),
        (float("inf"), "number"),
        (Decimal("NaN"), "number"),
        (Decimal("Infinity"), "number"),
        ("1e3", "digits"),
        ("1,5", "digits"),
        ("five", "digits"),
        ("", "digits"),
        ("1" * 500, "digits"),
        ("1000000000000.01", "too many"),
        (10**13, "too many"),
        (1e300, "too many"),
        (True, "number"),
    ],
)
def test_parse_credits_refuses_with_a_plain_message(value: str | int | float | Decimal, words: str) -> None:
    with pytest.raises(CreditsFormatError) as caught:
        parse_credits(value)
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("hundredths", "text"),
    [(150, "1.5"), (100, "1"), (25, "0.25"), (0, "0"), (-50, "-0.5"), (123475, "1234.75"), (5, "0.05"), (-1, "-0.01")],
)
def test_format_credits_drops_trailing_zeros_and_separators(hundredths: int, text: str) -> None:
    assert format_credits(hundredths) == text


@settings(max_examples=300)
@given(st.integers(0, 10**12 * HUNDREDTHS))
def test_format_then_parse_round_trips(hundredths: int) -> None:
    text = format_credits(hundredths)
    assert parse_credits(text) == hundredths
    # The same number arriving as a Discord NUMBER option (a float) reads back identically.
    assert parse_credits(float(text)) == hundredths


@settings(max_examples=200)
@given(st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False, allow_infinity=False))
def test_parse_then_format_round_trips(value: Decimal) -> None:
    hundredths = parse_credits(str(value))
    assert Decimal(format_credits(hundredths)) == value
    assert hundredths == int(value * 100)


def test_credits_in_words() -> None:
    assert [credits_text(h) for h in (100, 150, 25, 0, 1000)] == [
        "1 credit",
        "1.5 credits",
        "0.25 credits",
        "0 credits",
        "10 credits",
    ]
