"""plan_messages groups images into messages Discord accepts; alt_text describes each image."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imaginebot.delivery import (
    DESCRIPTION_LIMIT,
    REQUEST_JSON_SLACK,
    DeliverableImage,
    alt_text,
    plan_messages,
)

MiB = 1024 * 1024


def upload(index: int, size_bytes: int) -> DeliverableImage:
    return DeliverableImage(
        index=index,
        path=Path(f"/tmp/imagine-{index + 1}.png"),
        filename=f"imagine-{index + 1}.png",
        size_bytes=size_bytes,
        link=None,
        link_expires_at=None,
        note=None,
        width=1024,
        height=1024,
    )


def link(index: int) -> DeliverableImage:
    return DeliverableImage(
        index=index,
        path=None,
        filename=f"imagine-{index + 1}.png",
        size_bytes=30 * MiB,
        link=f"https://asset.example/{index}.png",
        link_expires_at=None,
        note="too large to upload: link above",
        width=None,
        height=None,
    )


def request_bytes(group: list[DeliverableImage], overhead_per_file: int = 1024) -> int:
    """What sending ``group`` costs, counted independently of plan_messages."""
    files = [image for image in group if image.path is not None]
    return sum(image.size_bytes + overhead_per_file for image in files) + REQUEST_JSON_SLACK


def test_ten_images_of_9_mib_are_split_under_25_mib() -> None:
    images = [upload(i, 9 * MiB) for i in range(10)]

    groups = plan_messages(images)

    assert all(request_bytes(group) < 25 * MiB for group in groups)
    assert [image.index for group in groups for image in group] == list(range(10))
    # Two fit together (18 MiB), three never do (27 MiB): five messages, not more.
    assert [len(group) for group in groups] == [2, 2, 2, 2, 2]


def test_twelve_small_images_make_ten_and_two() -> None:
    images = [upload(i, 200_000) for i in range(12)]

    groups = plan_messages(images)

    assert [[image.index for image in group] for group in groups] == [list(range(10)), [10, 11]]


def test_everything_fits_in_one_message() -> None:
    images = [upload(i, 2 * MiB) for i in range(4)]

    assert plan_messages(images) == [images]


def test_links_go_into_the_last_message() -> None:
    images = [upload(0, 9 * MiB), link(1), upload(2, 9 * MiB), upload(3, 9 * MiB), link(4)]

    groups = plan_messages(images)

    assert [[image.index for image in group] for group in groups] == [[0, 2], [3, 1, 4]]


def test_only_links_make_one_message() -> None:
    images = [link(0), link(1)]

    assert plan_messages(images) == [images]


def test_nothing_makes_no_message() -> None:
    assert plan_messages([]) == []


def test_a_file_too_big_for_any_request_gets_its_own_message() -> None:
    images = [upload(0, MiB), upload(1, 30 * MiB), upload(2, MiB)]

    groups = plan_messages(images)

    assert [[image.index for image in group] for group in groups] == [[0], [1], [2]]


def test_custom_limits_are_respected() -> None:
    images = [upload(i, 1000) for i in range(7)]

    groups = plan_messages(images, request_limit=REQUEST_JSON_SLACK + 3 * 1100, max_files=5, overhead_per_file=100)

    assert [len(group) for group in groups] == [3, 3, 1]


def test_max_files_must_be_positive() -> None:
    with pytest.raises(ValueError):
        plan_messages([upload(0, 1)], max_files=0)


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    request_limit=st.integers(min_value=REQUEST_JSON_SLACK + 10_000, max_value=100 * MiB),
    max_files=st.integers(min_value=1, max_value=10),
    overhead=st.integers(min_value=0, max_value=4096),
)
def test_any_fitting_sizes_are_grouped_within_both_limits_in_order(
    data: st.DataObject, request_limit: int, max_files: int, overhead: int
) -> None:
    file_limit = request_limit - REQUEST_JSON_SLACK - overhead
    kinds = data.draw(
        st.lists(st.one_of(st.integers(min_value=0, max_value=file_limit), st.none()), max_size=30), label="sizes"
    )
    images = [link(i) if size is None else upload(i, size) for i, size in enumerate(kinds)]

    groups = plan_messages(images, request_limit=request_limit, max_files=max_files, overhead_per_file=overhead)

    files_in = [image for image in images if image.path is not None]
    links_in = [image for image in images if image.path is None]
    assert all(groups), "an empty group"
    assert [image for group in groups for image in group if image.path is not None] == files_in
    if links_in:
        assert [image for image in groups[-1] if image.path is None] == links_in
    assert all(image.path is not None for group in groups[:-1] for image in group)
    for group in groups:
        assert sum(image.path is not None for image in group) <= max_files
        assert request_bytes(group, overhead) <= request_limit
    # No needless split: each message's first file would not have fitted into the previous message.
    for previous, following in itertools.pairwise(groups):
        together = previous + following[:1]
        assert len(together) > max_files or request_bytes(together, overhead) > request_limit


def test_alt_text_is_the_prompt_with_whitespace_collapsed() -> None:
    assert alt_text("  a  red\n\tpanda   on a bike ", 0, 1) == "a red panda on a bike"


def test_alt_text_leaves_markdown_as_plain_text() -> None:
    prompt = "**bold** _lean_ `code` <@123> [link](https://x.example)"

    assert alt_text(prompt, 0, 1) == prompt


def test_alt_text_numbers_images_when_there_are_several() -> None:
    assert alt_text("a red panda", 1, 4) == "Image 2 of 4: a red panda"
    assert alt_text("a red panda", 0, 1) == "a red panda"


def test_alt_text_is_truncated_at_a_word_boundary() -> None:
    words = [f"word{i}" for i in range(1000)]
    prompt = " ".join(words)

    text = alt_text(prompt, 2, 3)

    assert len(text) <= DESCRIPTION_LIMIT
    assert text.startswith("Image 3 of 3: word0 word1 ")
    assert text.endswith("…")
    kept = text.removeprefix("Image 3 of 3: ").removesuffix("…").split(" ")
    assert kept == words[: len(kept)]
    # As much as fits: one more word would have gone over.
    assert len(text) + len(words[len(kept)]) + 1 > DESCRIPTION_LIMIT


def test_alt_text_that_just_fits_is_not_truncated() -> None:
    prompt = "x" * (DESCRIPTION_LIMIT - len("Image 1 of 2: "))

    assert alt_text(prompt, 0, 2) == "Image 1 of 2: " + prompt


def test_alt_text_cuts_a_single_huge_word() -> None:
    text = alt_text("y" * 5000, 0, 1, limit=100)

    assert text == "y" * 99 + "…"


def test_alt_text_index_must_be_within_count() -> None:
    with pytest.raises(ValueError):
        alt_text("a", 4, 4)


@settings(max_examples=300, deadline=None)
@given(
    prompt=st.text(max_size=5000),
    count=st.integers(min_value=1, max_value=10),
    data=st.data(),
    limit=st.integers(min_value=1, max_value=2000),
)
def test_alt_text_always_fits_its_limit(prompt: str, count: int, data: st.DataObject, limit: int) -> None:
    index = data.draw(st.integers(min_value=0, max_value=count - 1), label="index")

    text = alt_text(prompt, index, count, limit=limit)

    assert 0 < len(text) <= limit
    collapsed = " ".join(prompt.split())
    prefix = f"Image {index + 1} of {count}: " if count > 1 else ""
    if collapsed and len(prefix) + 1 + len("…") <= limit:
        assert text.startswith(prefix)
        body = text.removeprefix(prefix)
        assert body == collapsed or (body.endswith("…") and collapsed.startswith(body.removesuffix("…")))
