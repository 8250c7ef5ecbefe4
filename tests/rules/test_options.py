"""The /imagine option rules: defaults, the server's settings and every refusal."""

from __future__ import annotations

import pytest

from imaginebot.options import ImagineOptions, OptionError, ServerDefaults, check_not_blocked, resolve_options
from imaginebot.sizes import DEFAULT_SIZE, Size


def test_contract_defaults() -> None:
    options = resolve_options(prompt="  a cat  ")
    assert options == ImagineOptions(
        prompt="a cat", size=Size(1024, 1024), quality="medium", count=1, output_format="png"
    )
    payload = options.to_generation_request().to_payload()
    assert "background" not in payload["promptObject"]
    assert "output_compression" not in payload["promptObject"]


def test_server_defaults_apply_and_the_member_overrides_them() -> None:
    server = ServerDefaults(size="1536x1024", quality="high", count=2, output_format="webp")
    options = resolve_options(prompt="x", server=server)
    assert (options.size, options.quality, options.count, options.output_format) == (
        Size(1536, 1024),
        "high",
        2,
        "webp",
    )
    mine = resolve_options(prompt="x", size="1024x1536", quality="low", count=1, output_format="png", server=server)
    assert (mine.size, mine.quality, mine.count, mine.output_format) == (Size(1024, 1536), "low", 1, "png")


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"prompt": "   "}, "empty"),
        ({"prompt": "x" * 4001}, "4,000"),
        ({"prompt": "x", "size": "1000x1000"}, "992x992"),
        ({"prompt": "x", "size": "big"}, "WxH"),
        ({"prompt": "x", "compression": 50}, "jpeg or webp"),
        ({"prompt": "x", "compression": 50, "output_format": "png"}, "jpeg or webp"),
        ({"prompt": "x", "count": 11}, "between 1 and 10"),
        ({"prompt": "x", "quality": "ultra"}, "quality"),
        ({"prompt": "x", "background": "transparent"}, "background"),
    ],
)
def test_each_bad_input_has_its_own_message(given: dict[str, object], words: str) -> None:
    with pytest.raises(OptionError) as caught:
        resolve_options(**given)  # type: ignore[arg-type]
    assert words in caught.value.message


def test_compression_follows_the_format_in_effect_after_server_defaults() -> None:
    options = resolve_options(prompt="x", compression=80, server=ServerDefaults(output_format="jpeg"))
    assert options.compression == 80 and options.output_format == "jpeg"
    assert options.to_generation_request().to_payload()["promptObject"]["output_compression"] == 80


def test_server_max_count() -> None:
    with pytest.raises(OptionError) as caught:
        resolve_options(prompt="x", count=5, server=ServerDefaults(max_count=4))
    assert "at most 4" in caught.value.message
    # A server default above its own maximum is capped rather than refused.
    assert resolve_options(prompt="x", server=ServerDefaults(count=6, max_count=3)).count == 3


def test_blocked_word_is_refused_without_repeating_it() -> None:
    with pytest.raises(OptionError) as caught:
        check_not_blocked("A KRAKEN rises", ["kraken"])
    assert "kraken" not in caught.value.message.lower()
    check_not_blocked("Krakenberg castle", ["kraken"])


def test_options_round_trip_through_storage() -> None:
    options = resolve_options(
        prompt="p", size="2048x1152", count=3, background="opaque", output_format="jpeg", compression=70
    )
    assert ImagineOptions.from_dict(options.to_dict()) == options


def test_a_server_default_size_saved_under_older_rules_gives_way_to_the_bots() -> None:
    # 3840x864 breaks the 3:1 rule; an earlier version could have saved it. The member typed no size at all.
    options = resolve_options(prompt="x", server=ServerDefaults(size="3840x864"))
    assert options.size == DEFAULT_SIZE
