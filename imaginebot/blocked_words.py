"""Words and phrases a server's moderators block in prompts, matched as whole words in any letter case.

"kraken" matches "KRAKEN!" and "the kraken's lair" but not "Krakenberg"; "red panda" matches "Red  Panda" with any
whitespace between the words. Letters and digits of every script count as word characters, so "café" does not
match inside "cafés". An entry must not touch a letter or digit on either side, whatever characters it is made of
("c++" matches "I like C++." but not "abc++"). An underscore separates words like a space (markdown italics, snake
case): "kraken" matches "_kraken_", and "red panda" matches "red_panda".

Entries are separated by commas, full-width and ideographic ones too ("，", "、"), as other keyboards type them.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Iterable

log = logging.getLogger(__name__)

MAX_ENTRY_LENGTH = 100

# Invisible characters someone could slip inside a word to get it past the list (soft hyphen, zero-width spaces and
# joiners, direction marks, word joiner, byte-order mark).
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
# Commas as a moderator may type them: ASCII, full-width, ideographic, and their small forms.
_SEPARATORS = re.compile("[,\uff0c\u3001\ufe50\ufe51]")


class WordListError(ValueError):
    """A blocked-words list a moderator gave that cannot be used; ``message`` says why in plain words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def normalize_text(text: str) -> str:
    """Fold ``text`` for comparison: compatibility forms (full-width letters), letter case, invisible characters."""
    text = _INVISIBLE.sub("", text)
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
            self._pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)")

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
