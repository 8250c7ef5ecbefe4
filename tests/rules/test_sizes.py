"""Size rules: parsing what members type, naming every broken rule, and suggesting the nearest valid sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imaginebot import sizes
from imaginebot.sizes import (
    DEFAULT_SIZE,
    PRESETS,
    Size,
    SizeError,
    check_size,
    is_valid,
    nearest_valid_sizes,
    parse_size,
    size_problems,
)

sides = st.integers(min_value=1, max_value=10_000)


def rules_hold(width: int, height: int) -> bool:
    """The four rules of contract.md, written out independently of the module."""
    return (
        width % 16 == 0
        and height % 16 == 0
        and 655_360 <= width * height <= 8_294_400
        and max(width, height) <= 3840
        and max(width, height) <= 3 * min(width, height)
    )


# --- parsing ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["1536x1024", "1536X1024", "1536 x 1024", "1536×1024", " 1536 * 1024 ", "１５３６x１０２４"]
)
def test_parse_size_is_lenient_about_the_separator_and_spaces(text: str) -> None:
    assert parse_size(text) == Size(1536, 1024)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "big", "1536", "1536x", "x1024", "1536,1024", "1536.5x1024", "1536x1024x2", "1536 by 1024", "a" * 500],
)
def test_parse_size_explains_the_format_when_it_cannot_read_the_text(text: str) -> None:
    with pytest.raises(SizeError) as caught:
        parse_size(text)
    assert "WxH" in caught.value.message
    assert "1536x1024" in caught.value.message
    assert caught.value.suggestions == ()


@pytest.mark.parametrize(
    ("text", "words", "first_try"),
    [
        ("0x1024", "0 pixels", "1024x1024"),  # no shape to keep: the common sizes
        ("1024x000", "0 pixels", "1024x1024"),
        ("-1024x1024", "negative", "1024x1024"),  # the minus sign dropped
        ("1234567x1024", "too large", "3840x1280"),  # the widest of that shape
    ],
)
def test_parse_size_refuses_zero_negative_and_absurd_numbers_with_sizes_to_try(
    text: str, words: str, first_try: str
) -> None:
    with pytest.raises(SizeError) as caught:
        parse_size(text)
    assert words in caught.value.message
    assert "WxH" in caught.value.message
    assert len(caught.value.suggestions) == 3
    assert all(is_valid(size) for size in caught.value.suggestions)
    assert str(caught.value.suggestions[0]) == first_try
    assert f"Try {first_try}, " in caught.value.message


@settings(max_examples=200)
@given(st.integers(1, 999_999), st.integers(1, 999_999))
def test_parse_size_round_trips_str(width: int, height: int) -> None:
    size = Size(width, height)
    assert str(size) == f"{width}x{height}"
    assert parse_size(str(size)) == size


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (-16, 16), (True, 16)])
def test_a_size_has_positive_whole_sides(width: int, height: int) -> None:
    with pytest.raises(ValueError):
        Size(width, height)


# --- the rules -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "valid"),
    [
        (Size(1024, 1024), True),
        (Size(1024, 640), True),  # exactly the minimum pixel count
        (Size(2880, 2880), True),  # exactly the maximum pixel count
        (Size(3840, 2160), True),  # maximum pixels and maximum edge
        (Size(3072, 1024), True),  # exactly 3:1
        (Size(1024, 3072), True),
        (Size(3840, 864), False),  # the API page's example breaks the 3:1 rule
        (Size(4096, 1024), False),
        (Size(4096, 256), False),
        (Size(1000, 1000), False),
        (Size(1024, 624), False),  # 638,976 pixels
        (Size(2896, 2880), False),  # 8,340,480 pixels
        (Size(3088, 1024), False),  # just over 3:1
    ],
)
def test_is_valid_examples(size: Size, valid: bool) -> None:
    assert is_valid(size) is valid
    assert (size_problems(size) == []) is valid


def test_size_problems_name_each_rule_in_plain_words() -> None:
    assert size_problems(Size(1000, 1000)) == ["1000 is not a multiple of 16"]
    assert size_problems(Size(1000, 1010)) == ["1000 and 1010 are not multiples of 16"]
    assert size_problems(Size(1024, 512)) == ["1024x512 has 524,288 pixels; the minimum is 655,360 (e.g. 1024x640)"]
    assert size_problems(Size(4096, 4096)) == [
        "4096x4096 has 16,777,216 pixels; the maximum is 8,294,400 (e.g. 3840x2160)",
        "the longer side is 4096 px; the maximum is 3840",
    ]
    assert size_problems(Size(4096, 1024)) == [
        "the longer side is 4096 px; the maximum is 3840",
        "4096x1024 is 4:1; the longer side may be at most 3 times the shorter",
    ]
    assert size_problems(Size(1024, 4096))[-1].startswith("1024x4096 is 1:4; the longer side")


def test_a_ratio_just_over_three_never_reads_as_three() -> None:
    (problem,) = size_problems(Size(3088, 1024))
    assert problem.startswith("3088x1024 is 3.02:1;")


@settings(max_examples=300)
@given(sides, sides)
def test_check_size_passes_exactly_the_sizes_that_follow_all_four_rules(width: int, height: int) -> None:
    text = f"{width}x{height}"
    if rules_hold(width, height):
        assert check_size(text) == Size(width, height)
        return
    with pytest.raises(SizeError) as caught:
        check_size(text)
    error = caught.value
    assert len(error.message) < 400
    assert error.message.startswith(f"{text} can't be used: ")
    for problem in size_problems(Size(width, height)):
        assert problem in error.message
    assert 1 <= len(error.suggestions) <= 3
    assert all(rules_hold(s.width, s.height) for s in error.suggestions)
    assert all(str(s) in error.message for s in error.suggestions)


def test_check_size_message_lists_the_suggestions() -> None:
    with pytest.raises(SizeError) as caught:
        check_size("1000x1000")
    assert caught.value.message == (
        "1000x1000 can't be used: 1000 is not a multiple of 16. Try 992x992, 1008x1008 or 976x976."
    )
    assert caught.value.suggestions == (Size(992, 992), Size(1008, 1008), Size(976, 976))


def test_check_size_message_names_every_broken_rule() -> None:
    with pytest.raises(SizeError) as caught:
        check_size("100001x1")
    message = caught.value.message
    for words in ("multiples of 16", "the minimum is 655,360", "the maximum is 3840", "at most 3 times"):
        assert words in message
    assert len(message) < 400


# --- nearest valid sizes ---------------------------------------------------------------------------------------------


def test_nearest_to_1000x1000_are_the_squares_around_it() -> None:
    assert nearest_valid_sizes(Size(1000, 1000), 2) == [Size(992, 992), Size(1008, 1008)]


def test_nearest_to_a_too_small_size_keeps_its_shape() -> None:
    found = nearest_valid_sizes(Size(1024, 512), 3)
    assert found[0] == Size(1152, 576)
    assert found[1] == Size(1184, 592)  # 2:1 kept rather than 1168x576
    assert all(is_valid(s) for s in found)


def test_nearest_to_an_overlong_panorama_is_clamped_to_3_to_1_and_the_edge() -> None:
    assert nearest_valid_sizes(Size(4096, 1024), 1) == [Size(3840, 1280)]
    assert nearest_valid_sizes(Size(1024, 4096), 1) == [Size(1280, 3840)]
    assert nearest_valid_sizes(Size(3840, 864), 1) == [Size(3840, 1280)]


def test_nearest_to_a_huge_square_is_the_largest_square() -> None:
    assert nearest_valid_sizes(Size(10_000, 10_000), 2) == [Size(2880, 2880), Size(2864, 2864)]
    assert nearest_valid_sizes(Size(1, 1), 1) == [Size(816, 816)]


def test_a_valid_size_is_its_own_nearest() -> None:
    assert nearest_valid_sizes(Size(1536, 1024), 1) == [Size(1536, 1024)]
    assert nearest_valid_sizes(Size(1536, 1024), 0) == []


@settings(max_examples=300)
@given(sides, sides, st.integers(1, 8))
def test_every_suggestion_is_valid_distinct_and_deterministic(width: int, height: int, limit: int) -> None:
    found = nearest_valid_sizes(Size(width, height), limit)
    assert len(found) == limit
    assert len(set(found)) == limit
    assert all(rules_hold(s.width, s.height) for s in found)
    assert nearest_valid_sizes(Size(width, height), limit) == found
    if rules_hold(width, height):
        assert found[0] == Size(width, height)


@settings(max_examples=15, deadline=None)
@given(sides, sides)
def test_the_windowed_search_finds_what_an_exhaustive_search_finds(width: int, height: int) -> None:
    target = sizes._target(Size(width, height))
    every = sorted(
        (sizes._distance(w, h, *target), w * h, w, h)
        for w in range(16, 3841, 16)
        for h in range(16, 3841, 16)
        if rules_hold(w, h)
    )
    expected = [Size(w, h) for _, _, w, h in every[:4]]
    assert nearest_valid_sizes(Size(width, height), 4) == expected


# --- labels and presets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "label", "orientation"),
    [
        (Size(1024, 1024), "1:1", "square"),
        (Size(1536, 1024), "3:2", "landscape"),
        (Size(1024, 1536), "2:3", "portrait"),
        (Size(2048, 1152), "16:9", "landscape"),
        (Size(1280, 800), "16:10", "landscape"),  # 8:5, named as people know it
        (Size(3360, 1440), "21:9", "landscape"),  # 7:3
        (Size(1152, 1024), "9:8", "landscape"),  # small reduced ratio
        (Size(1824, 1024), "≈16:9", "landscape"),  # 57:32
        (Size(2560, 1080), "2.37:1", "landscape"),  # 64:27, not within 1% of 21:9
        (Size(1080, 2560), "1:2.37", "portrait"),
    ],
)
def test_aspect_label_and_orientation(size: Size, label: str, orientation: str) -> None:
    assert size.aspect_label == label
    assert size.orientation == orientation
    assert size.pixels == size.width * size.height


def test_presets_are_valid_distinct_and_include_the_common_shapes() -> None:
    named = dict(PRESETS)
    assert all(rules_hold(s.width, s.height) for s in named.values())
    assert len(named) == len(PRESETS) == len(set(named.values())) <= 25
    assert {Size(1024, 1024), Size(1536, 1024), Size(1024, 1536), Size(3840, 2160), Size(3072, 1024)} <= set(
        named.values()
    )
    labels = {s.aspect_label for s in named.values()}
    assert {"1:1", "3:2", "2:3", "16:9", "9:16", "21:9", "3:1"} <= labels
    assert is_valid(DEFAULT_SIZE)
    assert Size(1024, 1024) == DEFAULT_SIZE


@pytest.mark.parametrize(
    ("typed", "size"), [("portrait", "1024x1536"), (" 4K  uhd ", "3840x2160"), ("Square", "1024x1024")]
)
def test_a_preset_name_sent_as_typed_is_its_size(typed: str, size: str) -> None:
    # The autocomplete lists presets by name; a member who presses enter without picking one sends the name.
    assert str(check_size(typed)) == size


def test_part_of_preset_names_is_answered_with_those_presets() -> None:
    with pytest.raises(SizeError) as caught:
        check_size("4k")
    assert "Did you mean 3840x2160 (4K UHD) or 2160x3840 (4K UHD portrait)?" in caught.value.message
    assert [str(size) for size in caught.value.suggestions] == ["3840x2160", "2160x3840"]
