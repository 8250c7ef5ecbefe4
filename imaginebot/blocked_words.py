"""Words and phrases a server's moderators block in prompts, matched as whole words in any letter case.

"kraken" matches "KRAKEN!" and "the kraken's lair" but not "Krakenberg"; "red panda" matches "Red  Panda" with any
whitespace between the words. Letters, digits and combining marks of every script count as word characters, so
"café" does not match inside "cafés", nor Hindi "कम" inside "कमी" (whose vowel sign is a combining mark). An entry
must not touch a letter, digit or mark on either side, whatever characters it is made of ("c++" matches "I like
C++." but not "abc++"). An underscore separates words like a space (markdown italics, snake case): "kraken" matches
"_kraken_", and "red panda" matches "red_panda". Arabic and Hebrew are compared without their optional vowel
points (Arabic hamza and madda signs included) and the Arabic stretching stroke (tatweel), so a word is matched however
fully it is written out. Marks that strike through or enclose letters ("k̶r̶a̶k̶e̶n̶") are ignored.

Entries are separated by commas, full-width and ideographic ones too ("，", "、"), as other keyboards type them.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import unicodedata
from collections.abc import Iterable

log = logging.getLogger(__name__)

MAX_ENTRY_LENGTH = 100

# Marks that Arabic and Hebrew writers may add to a word or leave out (Arabic harakat, Quranic marks and tatweel;
# Hebrew niqqud and cantillation): without them, "مَلِك" and "ملك" are the same word.
_OPTIONAL_POINTS = re.compile(
    "[\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0610-\u061a\u0640\u064b-\u065f\u0670\u06d6-\u06dc"
    "\u06df-\u06e4\u06e7\u06e8\u06ea-\u06ed]"
)
# The generic combining marks (diacritics, their extensions and supplement, marks for symbols, half marks). One left
# after NFKC (none of a composed é) sits on a letter or decorates: it does not join or split words, as before.
_GENERIC_MARKS = {*range(0x0300, 0x0370), *range(0x1AB0, 0x1B00), *range(0x1DC0, 0x1E00), *range(0x20D0, 0x2100)}
_GENERIC_MARKS |= set(range(0xFE20, 0xFE30))
# Of those, the ones that only strike through or enclose a letter ("k̶r̶a̶k̶e̶n̶", "kraken⃝"): removed. Not the keycap
# (U+20E3): "1️⃣" is not "1".
_DECORATIONS = re.compile("[\u0334-\u0338\u20d2\u20d3\u20d8-\u20da\u20dd-\u20e0\u20e2\u20e4-\u20e6\u20ea\u20eb]")
# Invisible characters that are not format characters (Unicode's default-ignorable code points beyond category Cf):
# the combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation selectors, and the
# variation selectors.
_INVISIBLE_EXTRA = frozenset(
    (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10))
) | frozenset(range(0xE0100, 0xE01F0))


def _character_classes() -> tuple[str, str]:
    """Two regular-expression classes' contents, from one scan of Unicode: the invisible characters someone could
    slip inside a word to get it past the list (every format character, such as zero-width spaces, joiners,
    direction marks and tags, and ``_INVISIBLE_EXTRA``), and the combining marks (categories Mn, Mc, Me) of
    particular scripts (neither invisible nor among ``_GENERIC_MARKS``).

    Planes 0-1 and 14 hold them all (2-3 are CJK ideographs, 4-13 unassigned, 15-16 private use): the scan at
    import takes ~30 ms instead of ~150.
    """
    invisible: list[int] = []
    marks: list[int] = []
    for code in itertools.chain(range(0x20000), range(0xE0000, 0xF0000)):
        category = unicodedata.category(chr(code))
        if category == "Cf" or code in _INVISIBLE_EXTRA:
            invisible.append(code)
        elif category.startswith("M") and code not in _GENERIC_MARKS:
            marks.append(code)
    return _ranges(invisible), _ranges(marks)


def _ranges(codes: list[int]) -> str:
    """Sorted code points as the ranges of a regular-expression class (``a-cx``)."""
    parts: list[str] = []
    for _, run in itertools.groupby(enumerate(codes), key=lambda pair: pair[1] - pair[0]):
        members = [code for _, code in run]
        first, last = re.escape(chr(members[0])), re.escape(chr(members[-1]))
        parts.append(first if len(members) == 1 else f"{first}-{last}")
    return "".join(parts)


_INVISIBLE_CLASS, _MARK_CLASS = _character_classes()
_INVISIBLE = re.compile(f"[{_INVISIBLE_CLASS}]")
# A word character for the entries' edges: \w, or a script's combining mark (a vowel sign of an Indic script is
# part of its word, and \w does not match it).
_WORD_CHAR = rf"[\w{_MARK_CLASS}]"

# Commas as a moderator may type them: ASCII, full-width, ideographic, and their small forms.
_SEPARATORS = re.compile("[,\uff0c\u3001\ufe50\ufe51]")


class WordListError(ValueError):
    """A blocked-words list a moderator gave that cannot be used; ``message`` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalize_text(text: str) -> str:
    """Fold ``text`` for comparison: compatibility forms (full-width letters), letter case, invisible characters,
    optional vowel points and decorative marks."""
    # Vowel points are taken off the decomposed form: so are they from a presentation form (שׁ as one code point)
    # and a hamza typed apart from its alef or written on it alike.
    text = _OPTIONAL_POINTS.sub("", unicodedata.normalize("NFKD", _INVISIBLE.sub("", text)))
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    # Case folding turns the capital dotted İ into "i" plus a combining dot; drop the dot so İstanbul is istanbul.
    # An underscore separates words, as a space does (see the module's docstring).
    return _DECORATIONS.sub("", folded).replace("i\u0307", "i").replace("_", " ")


def normalize_entry(entry: str) -> str:
    """A blocked word or phrase as it is stored and compared: ``normalize_text``, whitespace collapsed to one space.
    (A list saved by an earlier version may hold entries it would now write differently: compare through this.)"""
    return " ".join(normalize_text(entry).split())


def parse_word_list(text: str) -> list[str]:
    """Split a moderator's comma-separated list into normalized entries, keeping their order.

    Each entry is stripped, its inner whitespace collapsed to one space and its case folded; empty entries and
    repeats are dropped. Raises WordListError when an entry is longer than 100 characters.
    """
    entries: list[str] = []
    for part in _SEPARATORS.split(text):
        entry = normalize_entry(part)
        if not entry or entry in entries:
            continue
        if len(entry) > MAX_ENTRY_LENGTH:
            raise WordListError(
                f"Each blocked word or phrase can be at most {MAX_ENTRY_LENGTH} characters; "
                f"one has {len(entry)}. Separate entries with commas."
            )
        entries.append(entry)
    return entries


class BlockList:
    """A server's blocked entries compiled into one pattern, for checking many prompts against the same list."""

    def __init__(self, entries: Iterable[str]) -> None:
        normalized: list[str] = []
        for entry in entries:
            folded = normalize_entry(entry)
            if folded and folded not in normalized:
                normalized.append(folded)
        self.entries: tuple[str, ...] = tuple(normalized)
        self._pattern: re.Pattern[str] | None = None
        if normalized:
            self._pattern = re.compile(rf"(?<!{_WORD_CHAR})(?:{_trie_pattern(normalized)})(?!{_WORD_CHAR})")

    def find(self, prompt: str) -> str | None:
        """The entry (in its normalized form) that occurs earliest in ``prompt``, else None.

        The caller must not show the entry to the member: that would publish the list.
        """
        if self._pattern is None:
            return None
        match = self._pattern.search(normalize_text(prompt))
        if match is None:
            return None
        return " ".join(match.group().split())

    def __len__(self) -> int:
        return len(self.entries)


def _trie_pattern(entries: list[str]) -> str:
    """One pattern matching any of ``entries`` (normalized: a space between words matches any whitespace), built as
    a trie: entries sharing a beginning share its match, so each place in a prompt is tried once per character of
    the longest entry, not once per entry. A plain alternation of 500 entries sharing their first 90 characters
    took 0.4 s for a 4000-character prompt, on the loop every server shares.

    Longer entries are tried first where one continues another ("red panda" before "red"), falling back to the
    shorter one if the longer does not end a word there.
    """
    root: dict[str, dict] = {}  # type: ignore[type-arg]
    for entry in entries:
        node = root
        for char in entry:
            node = node.setdefault(char, {})
        node[""] = {}  # an entry ends here
    return _node_pattern(root)


def _node_pattern(node: dict[str, dict]) -> str:  # type: ignore[type-arg]
    branches = [
        (r"\s+" if char == " " else re.escape(char)) + _node_pattern(child)
        for char, child in sorted(node.items())
        if char
    ]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
    if "" in node:  # an entry may end here: the longer ones first (greedy), then this one
        return f"(?:{body})?"
    return body


@functools.lru_cache(maxsize=256)
def _block_list(entries: tuple[str, ...]) -> BlockList:
    return BlockList(entries)


def find_blocked(prompt: str, blocked: Iterable[str]) -> str | None:
    """The first blocked entry that occurs in ``prompt`` as a whole word or phrase, in its normalized form, else None.

    Compiled lists are cached by their entries, so calling this per request with a server's list is cheap. The
    caller must not echo the entry back to the member.
    """
    return _block_list(tuple(blocked)).find(prompt)
