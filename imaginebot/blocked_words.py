"""Words and phrases a server's moderators block in prompts, matched as whole words in any letter case.

"kraken" matches "KRAKEN!" and "the kraken's lair" but not "Krakenberg"; "red panda" matches "Red  Panda" with any
whitespace between the words. Letters, digits and combining marks of every script count as word characters, so
"café" does not match inside "cafés", nor Hindi "कम" inside "कमी" (whose vowel sign is a combining mark). An entry
must not touch a letter, digit or mark on either side, whatever characters it is made of ("c++" matches "I like
C++." but not "abc++"). An underscore separates words like a space (markdown italics, snake case): "kraken" matches
"_kraken_", and "red panda" matches "red_panda". Arabic and Hebrew are compared without their optional vowel
points and the Arabic stretching stroke (tatweel), so a word is matched however fully it is written out.

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

# Invisible characters someone could slip inside a word to get it past the list (soft hyphen, zero-width spaces and
# joiners, direction marks, word joiner, byte-order mark).
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
# Marks that Arabic and Hebrew writers may add to a word or leave out (Arabic harakat, Quranic marks and tatweel;
# Hebrew niqqud and cantillation): without them, "مَلِك" and "ملك" are the same word.
_OPTIONAL_POINTS = re.compile(
    "[\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0610-\u061a\u0640\u064b-\u065f\u0670\u06d6-\u06dc"
    "\u06df-\u06e4\u06e7\u06e8\u06ea-\u06ed]"
)


def _combining_marks() -> str:
    """Every combining mark (Unicode categories Mn, Mc, Me) as the ranges of a regular-expression class.

    Planes 0-1 and 14 hold them all (2-3 are CJK ideographs, 4-13 unassigned, 15-16 private use): the scan at import
    takes ~20 ms instead of ~110.
    """
    ranges: list[str] = []
    start = previous = -2
    for code in itertools.chain(range(0x20000), range(0xE0000, 0xF0000)):
        if unicodedata.category(chr(code)).startswith("M"):
            if code != previous + 1:
                if start >= 0:
                    ranges.append(_char_range(start, previous))
                start = code
            previous = code
    ranges.append(_char_range(start, previous))
    return "".join(ranges)


def _char_range(first: int, last: int) -> str:
    return re.escape(chr(first)) if first == last else f"{re.escape(chr(first))}-{re.escape(chr(last))}"


# A word character for the entries' edges: \w, or a combining mark (a vowel sign of an Indic script is part of its
# word, and \w does not match it).
_WORD_CHAR = rf"[\w{_combining_marks()}]"

# Commas as a moderator may type them: ASCII, full-width, ideographic, and their small forms.
_SEPARATORS = re.compile("[,\uff0c\u3001\ufe50\ufe51]")


class WordListError(ValueError):
    """A blocked-words list a moderator gave that cannot be used; ``message`` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalize_text(text: str) -> str:
    """Fold ``text`` for comparison: compatibility forms (full-width letters), letter case, invisible characters."""
    text = _OPTIONAL_POINTS.sub("", _INVISIBLE.sub("", text))
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    # Case folding turns the capital dotted İ into "i" plus a combining dot; drop the dot so İstanbul is istanbul.
    # An underscore separates words, as a space does (see the module's docstring).
    return folded.replace("i\u0307", "i").replace("_", " ")


def _normalize_entry(entry: str) -> str:
    return " ".join(normalize_text(entry).split())


def parse_word_list(text: str) -> list[str]:
    """Split a moderator's comma-separated list into normalized entries, keeping their order.

    Each entry is stripped, its inner whitespace collapsed to one space and its case folded; empty entries and
    repeats are dropped. Raises WordListError when an entry is longer than 100 characters.
    """
    entries: list[str] = []
    for part in _SEPARATORS.split(text):
        entry = _normalize_entry(part)
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
            folded = _normalize_entry(entry)
            if folded and folded not in normalized:
                normalized.append(folded)
        self.entries: tuple[str, ...] = tuple(normalized)
        self._pattern: re.Pattern[str] | None = None
        if normalized:
            # Longest first, so "red panda" wins over "red" where both start; each word matched literally.
            alternatives = sorted(normalized, key=len, reverse=True)
            body = "|".join(r"\s+".join(map(re.escape, entry.split(" "))) for entry in alternatives)
            self._pattern = re.compile(rf"(?<!{_WORD_CHAR})(?:{body})(?!{_WORD_CHAR})")

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


@functools.lru_cache(maxsize=256)
def _block_list(entries: tuple[str, ...]) -> BlockList:
    return BlockList(entries)


def find_blocked(prompt: str, blocked: Iterable[str]) -> str | None:
    """The first blocked entry that occurs in ``prompt`` as a whole word or phrase, in its normalized form, else None.

    Compiled lists are cached by their entries, so calling this per request with a server's list is cheap. The
    caller must not echo the entry back to the member.
    """
    return _block_list(tuple(blocked)).find(prompt)
