"""Which image sizes GPT Image 2 accepts, how to read one a member typed, and what to suggest instead.

Pure functions: no I/O, no Discord. The rules (all must hold): both sides are multiples of 16; 655,360 <= W*H <=
8,294,400; the longer side is at most 3840; the longer side is at most 3 times the shorter.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from operator import itemgetter
from typing import Literal

log = logging.getLogger(__name__)

BLOCK = 16
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400
MAX_EDGE = 3840
MAX_RATIO = 3

Orientation = Literal["square", "landscape", "portrait"]

# Ratios people name, in the order autocomplete prefers them. 16:10 equals 8:5 and 21:9 equals 7:3; the common name
# is shown for both.
_COMMON_RATIOS: tuple[tuple[int, int], ...] = (
    (1, 1),
    (3, 2),
    (2, 3),
    (4, 3),
    (3, 4),
    (16, 9),
    (9, 16),
    (16, 10),
    (10, 16),
    (21, 9),
    (9, 21),
    (2, 1),
    (1, 2),
    (5, 4),
    (4, 5),
    (3, 1),
    (1, 3),
)
# Keyed by the reduced terms: (8, 5) is 16:10, (7, 3) is 21:9.
_COMMON_BY_TERMS: dict[tuple[int, int], int] = {
    (Fraction(a, b).numerator, Fraction(a, b).denominator): i for i, (a, b) in enumerate(_COMMON_RATIOS)
}
_COMMON_LABELS: tuple[str, ...] = tuple(f"{a}:{b}" for a, b in _COMMON_RATIOS)
_COMMON_VALUES: tuple[tuple[float, str], ...] = tuple(sorted((a / b, f"{a}:{b}") for a, b in _COMMON_RATIOS))
# A reduced ratio with both terms up to this is shown as is ("9:8"); larger ones ("57:32") are approximated.
_SMALL_RATIO_TERM = 20
# A ratio within 1% of a common one is shown as "≈16:9".
_NEAR_COMMON = 0.01

# A request far beyond the limits is not a size anyone meant; refuse to parse more digits than this.
_MAX_DIGITS = 6
_MAX_TEXT = 64
_SIZE_TEXT = re.compile(r"^\s*([+-]?\d+)\s*[xX×*]\s*([+-]?\d+)\s*$")
_FORMAT_HINT = "Write the size as WxH (width x height in pixels), for example 1536x1024; both sides multiples of 16."

# Nearest-size distance: a 1% change of shape weighs as much as a 4% change of width plus height.
_ASPECT_WEIGHT = 4.0


@dataclass(frozen=True, slots=True, order=True)
class Size:
    """An image size in pixels, written ``WxH``. Any positive size; whether it is valid is a separate question."""

    width: int
    height: int

    def __post_init__(self) -> None:
        for name, value in (("width", self.width), ("height", self.height)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number of pixels, not {value!r}")

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height

    @property
    def orientation(self) -> Orientation:
        """``"square"``, ``"landscape"`` (wider than tall) or ``"portrait"``."""
        if self.width == self.height:
            return "square"
        return "landscape" if self.width > self.height else "portrait"

    @property
    def aspect_label(self) -> str:
        """The shape in words people use: ``"3:2"``, ``"16:10"``, ``"21:9"``, ``"≈16:9"`` or ``"2.37:1"``."""
        exact = _exact_ratio_text(self.width, self.height)
        if exact is not None:
            return exact
        ratio = self.width / self.height
        near = _near_common(ratio)
        if near is not None:
            return f"≈{near}"
        if ratio >= 1:
            return f"{_two_decimals(ratio)}:1"
        return f"1:{_two_decimals(1 / ratio)}"


DEFAULT_SIZE = Size(1024, 1024)


class SizeError(ValueError):
    """A size a member asked for that cannot be used, with a plain explanation and valid sizes to try instead."""

    def __init__(self, message: str, suggestions: tuple[Size, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.suggestions = suggestions


def _exact_ratio_text(width: int, height: int) -> str | None:
    """``"21:9"`` for a common ratio, ``"9:8"`` for a small reduced one, else None."""
    divisor = math.gcd(width, height)
    terms = (width // divisor, height // divisor)
    common = _COMMON_BY_TERMS.get(terms)
    if common is not None:
        return _COMMON_LABELS[common]
    if max(terms) <= _SMALL_RATIO_TERM:
        return f"{terms[0]}:{terms[1]}"
    return None


def _near_common(ratio: float) -> str | None:
    """The label of the common ratio within 1% of ``ratio`` (the closest one), else None."""
    at = bisect.bisect(_COMMON_VALUES, ratio, key=itemgetter(0))
    best, best_error = None, _NEAR_COMMON
    for value, label in _COMMON_VALUES[max(0, at - 1) : at + 1]:
        error = max(ratio / value, value / ratio) - 1
        if error <= best_error:
            best, best_error = label, error
    return best


def _two_decimals(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _ascii_digits(text: str) -> str:
    # Members on other keyboards may type full-width or other script digits; int() accepts them, prefixes need ASCII.
    return "".join(str(unicodedata.decimal(char)) if not char.isascii() else char for char in text)


def parse_size(text: str) -> Size:
    """Read ``"1536x1024"`` (also ``1536X1024``, ``1536 x 1024``, ``1536×1024``, ``1536*1024``) as a Size.

    Only the form is checked here, not the size rules. Raises SizeError explaining the WxH form when the
    text is not a size, a side is zero or negative, or a number is absurdly long.
    """
    match = _SIZE_TEXT.match(text) if len(text) <= _MAX_TEXT else None
    if match is None:
        raise SizeError(f"That is not a size. {_FORMAT_HINT}")
    sides: list[int] = []
    problem = ""
    for raw in match.groups():
        digits = _ascii_digits(raw.lstrip("+-")).lstrip("0")
        if not digits:
            problem = problem or "A side cannot be 0 pixels."
        elif raw.startswith("-"):
            problem = problem or "A side cannot be negative."
        elif len(digits) > _MAX_DIGITS:
            problem = problem or f"That size is far too large: each side can be at most {MAX_EDGE} pixels."
            digits = "9" * _MAX_DIGITS  # its shape is still known, for the sizes to try
        sides.append(int(digits or 0))
    if problem:
        # What the member most likely meant: the same numbers without the minus sign, or the largest of that
        # shape; with a side of 0 there is no shape to keep, so the common sizes.
        if all(sides):
            suggestions = tuple(nearest_valid_sizes(Size(*sides), 3))
        else:
            suggestions = tuple(size for _, size in PRESETS[:3])
        raise SizeError(f"{problem} Try {_either(map(str, suggestions))}. {_FORMAT_HINT}", suggestions)
    return Size(sides[0], sides[1])


def _either(choices: Iterable[str]) -> str:
    """``"A, B or C"``."""
    names = list(choices)
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def size_problems(size: Size) -> list[str]:
    """Every rule ``size`` breaks, each in plain words that say what the limit is. Empty when the size is valid."""
    problems: list[str] = []
    off_grid = sorted({side for side in (size.width, size.height) if side % BLOCK})
    if len(off_grid) == 1:
        problems.append(f"{off_grid[0]} is not a multiple of {BLOCK}")
    elif off_grid:
        problems.append(f"{off_grid[0]} and {off_grid[1]} are not multiples of {BLOCK}")
    if size.pixels < MIN_PIXELS:
        pixels = f"{size.pixels:,} pixel{'s' if size.pixels > 1 else ''}"
        problems.append(f"{size} has {pixels}; the minimum is {MIN_PIXELS:,} (e.g. 1024x640)")
    elif size.pixels > MAX_PIXELS:
        problems.append(f"{size} has {size.pixels:,} pixels; the maximum is {MAX_PIXELS:,} (e.g. 3840x2160)")
    longer, shorter = max(size.width, size.height), min(size.width, size.height)
    if longer > MAX_EDGE:
        problems.append(f"the longer side is {longer} px; the maximum is {MAX_EDGE}")
    if longer > MAX_RATIO * shorter:
        problems.append(
            f"{size} is {_ratio_for_problem(size)}; the longer side may be at most {MAX_RATIO} times the shorter"
        )
    return problems


def _ratio_for_problem(size: Size) -> str:
    exact = _exact_ratio_text(size.width, size.height)
    if exact is not None:
        return exact
    # Rounded up, so a ratio just over 3 never reads as "3:1".
    longer, shorter = max(size.width, size.height), min(size.width, size.height)
    figure = _two_decimals(math.ceil(Fraction(longer * 100, shorter)) / 100)
    return f"{figure}:1" if size.width > size.height else f"1:{figure}"


def _is_valid(width: int, height: int) -> bool:
    longer, shorter = max(width, height), min(width, height)
    return (
        width % BLOCK == 0
        and height % BLOCK == 0
        and MIN_PIXELS <= width * height <= MAX_PIXELS
        and longer <= MAX_EDGE
        and longer <= MAX_RATIO * shorter
    )


def _valid_heights(width: int) -> range:
    """Every height that makes a valid size with ``width``; the rules leave one unbroken run of multiples of 16."""
    if width % BLOCK or not BLOCK <= width <= MAX_EDGE:
        return range(0)
    low = max(-(-MIN_PIXELS // width), -(-width // MAX_RATIO))
    high = min(MAX_PIXELS // width, MAX_RATIO * width, MAX_EDGE)
    return range(-(-low // BLOCK) * BLOCK, high // BLOCK * BLOCK + 1, BLOCK)


def is_valid(size: Size) -> bool:
    """True when ``size`` follows every size rule."""
    return _is_valid(size.width, size.height)


def _target(size: Size) -> tuple[float, float]:
    """The size asked for, brought inside the limits while keeping its shape as far as they allow.

    The ratio is clamped to 3:1 keeping the longer side, the longer side to 3840, then both are scaled together
    into the pixel range. "4096x1024" becomes 3840x1280; "1024x512" becomes about 1145x572.
    """
    longer, shorter = max(size.width, size.height), min(size.width, size.height)
    ratio = float(min(Fraction(longer, shorter), Fraction(MAX_RATIO)))
    long_side = float(min(longer, MAX_EDGE))
    short_side = long_side / ratio
    pixels = long_side * short_side
    if pixels < MIN_PIXELS or pixels > MAX_PIXELS:
        scale = math.sqrt((MIN_PIXELS if pixels < MIN_PIXELS else MAX_PIXELS) / pixels)
        long_side, short_side = long_side * scale, short_side * scale
    return (long_side, short_side) if size.width >= size.height else (short_side, long_side)


def _distance(width: int, height: int, target_width: float, target_height: float) -> float:
    target_ratio = target_width / target_height
    ratio = width / height
    aspect_change = max(ratio / target_ratio, target_ratio / ratio) - 1
    side_change = abs(width - target_width) / target_width + abs(height - target_height) / target_height
    # Rounded so that changes equal on paper (992 and 1008 around 1000) tie exactly and fall to the tie-breaks.
    return round(_ASPECT_WEIGHT * aspect_change + side_change, 9)


def nearest_valid_sizes(size: Size, limit: int = 3) -> list[Size]:
    """The ``limit`` valid sizes closest to ``size``, closest first (``size`` itself first when it is valid).

    "Closest" is measured from the target: ``size`` brought inside the limits keeping its shape (ratio clamped to
    3:1 keeping the longer side, longer side clamped to 3840, then scaled into the pixel range). The distance of a
    candidate is 4 x the relative change of aspect ratio + the relative change of width + that of height, so the
    shape is kept when a nearby size has it. Ties go to fewer pixels (cheaper), then to the narrower size.
    Examples: 1000x1000 -> 992x992, 1008x1008, 976x976; 1024x512 -> 1152x576, ... (2:1 kept); 4096x1024 ->
    3840x1280, ... Always ``limit`` distinct valid sizes (for ``limit`` >= 1), deterministic.
    """
    if limit < 1:
        return []
    target_width, target_height = _target(size)
    widest = max(target_width, target_height)
    reach = 4 * BLOCK
    while True:
        heights = _grid_around(target_height, reach)
        candidates = sorted(
            (_distance(w, h, target_width, target_height), w * h, w, h)
            for w in _grid_around(target_width, reach)
            for h in _overlap(heights, _valid_heights(w))
        )
        # Any size outside this window changes a side by more than `reach`, so its distance exceeds
        # reach / widest: once the limit-th best is below that, nothing outside can beat or tie it.
        covers_everything = reach >= MAX_EDGE
        if len(candidates) >= limit and (covers_everything or candidates[limit - 1][0] < reach / widest - 1e-9):
            return [Size(w, h) for _, _, w, h in candidates[:limit]]
        if covers_everything:
            return [Size(w, h) for _, _, w, h in candidates]
        reach *= 2


def _grid_around(center: float, reach: int) -> range:
    low = max(BLOCK, math.ceil((center - reach) / BLOCK) * BLOCK)
    high = min(MAX_EDGE, math.floor((center + reach) / BLOCK) * BLOCK)
    return range(low, high + 1, BLOCK)


def _overlap(first: range, second: range) -> range:
    # Both step by BLOCK from multiples of BLOCK, so they share their grid.
    return range(max(first.start, second.start), min(first.stop, second.stop), BLOCK)


def check_size(text: str) -> Size:
    """Parse and validate a size a member typed; raise SizeError naming every broken rule and what to try instead.

    A bare preset name ("portrait", "4K UHD", any letter case) is that preset's size: Discord sends what was typed
    when the member presses enter without picking one of the autocomplete's suggestions.
    """
    folded = " ".join(text.split()).casefold()
    for name, preset in PRESETS:
        if name.casefold() == folded:
            return preset
    try:
        size = parse_size(text)
    except SizeError as error:
        named = [(name, preset) for name, preset in PRESETS if folded and folded in name.casefold()][:3]
        if error.suggestions or not named:
            raise
        either = _either(f"{preset} ({name})" for name, preset in named)
        message = f"That is not a size. Did you mean {either}? {_FORMAT_HINT}"
        raise SizeError(message, tuple(preset for _, preset in named)) from None
    problems = size_problems(size)
    if not problems:
        return size
    suggestions = tuple(nearest_valid_sizes(size, 3))
    message = f"{size} can't be used: {'; '.join(problems)}. Try {_either(map(str, suggestions))}."
    raise SizeError(message, suggestions)


def valid_size_or_none(text: str | None) -> Size | None:
    """``text`` as a valid size, or None when it is missing or breaks a rule."""
    if not text:
        return None
    try:
        return check_size(text)
    except SizeError:
        return None


PRESETS: tuple[tuple[str, Size], ...] = (
    ("square", Size(1024, 1024)),
    ("landscape", Size(1536, 1024)),
    ("portrait", Size(1024, 1536)),
    ("photo landscape", Size(1536, 1152)),
    ("photo portrait", Size(1152, 1536)),
    ("widescreen", Size(2048, 1152)),
    ("widescreen portrait", Size(1152, 2048)),
    ("ultrawide", Size(2688, 1152)),
    ("large ultrawide", Size(3360, 1440)),
    ("4K UHD", Size(3840, 2160)),
    ("4K UHD portrait", Size(2160, 3840)),
    ("panorama", Size(3072, 1024)),
    ("tall panorama", Size(1024, 3072)),
    ("large square", Size(2880, 2880)),
    ("small landscape", Size(1024, 640)),
)

# Discord allows at most 25 choices, each name and value at most 100 characters.
MAX_CHOICES = 25
_AUTOCOMPLETE_TEXT = re.compile(r"^\s*(\d*)\s*(?:([xX×*])\s*(\d*))?\s*$")
_NEAREST_SHOWN = 5


# One row per valid size: (popularity rank, width, height). Tuples sort by rank, so lists merge without a key.
_Row = tuple[int, int, int]


def _popularity(width: int, height: int, preset_rank: dict[tuple[int, int], int]) -> tuple[int, int, float, int, int]:
    """Autocomplete order: presets, common ratios (round sides near 1 MP first), near-common ratios, the rest."""
    preset = preset_rank.get((width, height))
    if preset is not None:
        return (0, preset, 0.0, 0, 0)
    divisor = math.gcd(width, height)
    common = _COMMON_BY_TERMS.get((width // divisor, height // divisor))
    if common is not None:
        # Sides that are multiples of larger powers of two are the ones people type (1536, not 1520).
        roundness = min((width & -width).bit_length(), (height & -height).bit_length(), 9)
        return (1, common * 10 - roundness, abs(math.log2(width * height / 1_048_576)), width, height)
    if _near_common(width / height) is not None:
        return (2, 0, abs(math.log2(width * height / 1_048_576)), width, height)
    return (3, 0, 0.0, width, height)


def _build_tables() -> tuple[dict[int, list[_Row]], dict[int, list[_Row]]]:
    preset_rank = {(size.width, size.height): i for i, (_, size) in enumerate(PRESETS)}
    valid = [(w, h) for w in range(BLOCK, MAX_EDGE + 1, BLOCK) for h in _valid_heights(w)]
    valid.sort(key=lambda wh: _popularity(wh[0], wh[1], preset_rank))
    by_width: dict[int, list[_Row]] = {}
    by_height: dict[int, list[_Row]] = {}
    for rank, (w, h) in enumerate(valid):
        by_width.setdefault(w, []).append((rank, w, h))
        by_height.setdefault(h, []).append((rank, w, h))
    return by_width, by_height


_BY_WIDTH, _BY_HEIGHT = _build_tables()
_PRESET_NAMES: dict[Size, str] = {size: name for name, size in PRESETS}


def _choice(size: Size, note: str = "") -> tuple[str, str]:
    preset = _PRESET_NAMES.get(size)
    name = f"{size} · {size.aspect_label} {preset or size.orientation}"
    return (f"{name} ({note})" if note else name, str(size))


def _best(lists: list[list[_Row]], limit: int, note: str = "") -> list[tuple[str, str]]:
    """The ``limit`` most popular sizes among several rank-sorted lists."""
    return [_choice(Size(w, h), note) for _, w, h in islice(heapq.merge(*lists), limit)]


def autocomplete_sizes(partial: str, limit: int = MAX_CHOICES) -> list[tuple[str, str]]:
    """Suggestions ``(name, value)`` for the ``size`` option while the member types; each value is a valid size.

    Empty input: the presets. ``"15"``: sizes whose width starts with 15. ``"1536x"``: valid heights for 1536, common
    ratios first; ``"1536x10"``: those starting with 10. A complete valid size comes first; a complete invalid one
    gets its nearest valid sizes, labelled "(nearest valid)". Other text is matched against the preset names.
    """
    limit = max(0, min(limit, MAX_CHOICES))
    if limit == 0 or len(partial) > _MAX_TEXT:
        return []
    match = _AUTOCOMPLETE_TEXT.match(partial)
    if match is None:
        needle = partial.strip().casefold()
        named = [_choice(size) for _, size in PRESETS]
        return [choice for choice in named if needle in choice[0].casefold()][:limit]
    width_group, separator, height_group = match.groups()
    width_text, height_text = _ascii_digits(width_group), _ascii_digits(height_group or "")
    if not width_text and not height_text:
        return [_choice(size) for _, size in PRESETS][:limit]
    if not separator:
        return _best([rows for width, rows in _BY_WIDTH.items() if str(width).startswith(width_text)], limit)
    if not width_text:
        return _best([rows for height, rows in _BY_HEIGHT.items() if str(height).startswith(height_text)], limit)

    width = int(width_text)
    complete = Size(width, int(height_text)) if height_text and int(height_text) > 0 and width > 0 else None
    found = [complete] if complete is not None and is_valid(complete) else []
    for _, w, h in _BY_WIDTH.get(width, ()):
        if len(found) >= limit:
            break
        if str(h).startswith(height_text) and (complete is None or h != complete.height):
            found.append(Size(w, h))
    if found:
        return [_choice(size) for size in found]
    if complete is not None:
        return [_choice(size, "nearest valid") for size in nearest_valid_sizes(complete, min(limit, _NEAREST_SHOWN))]
    # A width no valid size has ("1000x"): offer the valid widths on either side of it.
    widths = sorted(_BY_WIDTH, key=lambda w: (abs(w - width), w))[:2]
    lists = [[row for row in _BY_WIDTH[w] if str(row[2]).startswith(height_text)] for w in widths]
    return _best(lists, limit, "nearest valid")
