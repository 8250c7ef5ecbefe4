"""Autocomplete for the size option: presets, typed prefixes, nearest valid sizes, Discord's limits, speed."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from imaginebot.sizes import PRESETS, Size, autocomplete_sizes, is_valid, parse_size


def values(partial: str) -> list[str]:
    return [value for _, value in autocomplete_sizes(partial)]


def test_empty_input_shows_the_presets_with_their_shape() -> None:
    choices = autocomplete_sizes("")
    assert [value for _, value in choices] == [str(size) for _, size in PRESETS]
    assert ("1536x1024 · 3:2 landscape", "1536x1024") in choices
    assert ("1024x1024 · 1:1 square", "1024x1024") in choices
    assert autocomplete_sizes("   ") == choices


def test_a_width_prefix_offers_sizes_with_such_widths() -> None:
    found = values("15")
    assert len(found) == 25
    assert all(value.startswith("15") for value in found)
    assert found[0] == "1536x1024"
    assert "1536x1536" in found


def test_a_complete_width_offers_its_valid_heights_common_ratios_first() -> None:
    found = values("1536x")
    assert all(value.startswith("1536x") for value in found)
    assert found[:3] == ["1536x1024", "1536x1152", "1536x1536"]
    assert {"1536x864", "1536x2048", "1536x2304"} <= set(found)


def test_a_height_prefix_narrows_the_heights() -> None:
    found = values("1536x10")
    assert found[0] == "1536x1024"
    assert sorted(found) == ["1536x1008", "1536x1024", "1536x1040", "1536x1056", "1536x1072", "1536x1088"]
    assert values("1536 X 10") == found


def test_a_height_alone_offers_widths_for_it() -> None:
    found = values("x1024")
    assert found[0] == "1024x1024"
    assert all(value.endswith("x1024") for value in found)


def test_a_complete_valid_size_comes_first() -> None:
    assert values("1552x1040")[0] == "1552x1040"
    assert values("1536x1024") == ["1536x1024"]


def test_a_complete_invalid_size_offers_its_nearest_valid_sizes() -> None:
    choices = autocomplete_sizes("1000x1000")
    assert choices[0] == ("992x992 · 1:1 square (nearest valid)", "992x992")
    assert choices[1][1] == "1008x1008"
    assert all(name.endswith("(nearest valid)") for name, _ in choices)


def test_a_width_no_valid_size_has_offers_the_widths_beside_it() -> None:
    found = values("1000x")
    assert found and {value.split("x")[0] for value in found} <= {"992", "1008"}


def test_words_match_preset_names() -> None:
    assert values("4K") == ["3840x2160", "2160x3840"]
    assert "3072x1024" in values("panorama")
    assert values("no such thing") == []


def test_the_limit_is_respected() -> None:
    assert len(autocomplete_sizes("1", limit=5)) == 5
    assert len(autocomplete_sizes("1", limit=100)) == 25
    assert autocomplete_sizes("1", limit=0) == []


partials = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789xX× *", max_size=12),
    st.from_regex(r"\A[0-9]{0,5}(x[0-9]{0,5})?\Z"),
)


@settings(max_examples=400)
@given(partials)
def test_every_choice_fits_discord_and_is_a_valid_size(partial: str) -> None:
    choices = autocomplete_sizes(partial)
    assert len(choices) <= 25
    assert len({value for _, value in choices}) == len(choices)
    for name, value in choices:
        assert 1 <= len(name) <= 100 and 1 <= len(value) <= 100
        assert is_valid(parse_size(value))
        assert name.startswith(f"{value} · ")


valid_sizes = st.builds(
    Size, st.integers(30, 240).map(lambda n: n * 16), st.integers(30, 240).map(lambda n: n * 16)
).filter(is_valid)


@settings(max_examples=300)
@given(valid_sizes, st.data())
def test_a_typed_prefix_of_a_valid_size_is_respected(size: Size, data: st.DataObject) -> None:
    text = str(size)
    prefix = text[: data.draw(st.integers(1, len(text)), label="prefix length")]
    found = values(prefix)
    assert found, prefix
    assert all(value.startswith(prefix) for value in found)
    if prefix == text:
        assert found[0] == text


def test_autocomplete_is_fast() -> None:
    typical = ["", "1", "15", "153", "1536", "1536x", "1536x1", "1536x10", "1536x1024", "x9", "4k", "1000x1000"]
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        for partial in typical:
            autocomplete_sizes(partial)
    average = (time.perf_counter() - started) / (rounds * len(typical))
    # Typically about 0.1 ms; the bound is loose so a slow machine does not fail it, tight enough to catch a scan
    # of every valid size per keystroke (several ms).
    assert average < 0.002
