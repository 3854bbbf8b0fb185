"""Text from files, datasets, models or servers made safe to print on a terminal.

A terminal obeys the control characters in what it prints: `ESC ] 0 ; title
BEL` retitles the window, `ESC [ 2 J` clears it, C1 controls (U+0080-U+009F)
do the same on many terminals, and bidirectional overrides (U+202E) make a
line read differently from the bytes it holds. Every place that prints text
it did not write itself passes it through `printable` first.
"""

from __future__ import annotations

import unicodedata

# Characters that are not Cc but still move the cursor or reorder the line.
_ALSO = frozenset("\u2028\u2029\u200e\u200f\u061c"
                  "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(ch: str) -> str:
    if ch in "\n\r":
        return "\\n" if ch == "\n" else "\\r"
    o = ord(ch)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """`text` as a string whose control characters are shown, not obeyed.

    Every C0/C1 control, DEL, the line/paragraph separators and the
    bidirectional controls become visible escapes (ESC -> ``\\x1b``,
    U+202E -> ``\\u202e``); all other characters, any script, pass unchanged.

    Args:
      text: anything; non-strings are formatted with str() first.
      newlines: keep "\\n" (multi-line output such as a tree); otherwise it
        is escaped too, so one item stays on one line. A tab is kept.

    Returns:
      The escaped string.
    """
    s = str(text)
    if s.isprintable():  # the common case, in C
        return s
    keep = "\t\n" if newlines else "\t"
    return "".join(ch if ch in keep or not (unicodedata.category(ch) == "Cc" or ch in _ALSO)
                   else _escape(ch) for ch in s)
