"""ASCII-only number checks for lengths and numbers that come from clients or Mongrel2.

``str.isdigit()`` is true for '²' or U+0661 ARABIC-INDIC DIGIT ONE (then ``int()`` raises,
or reads a digit the peer never meant), and ``int()`` itself accepts '+', '_', spaces and
non-ASCII digits: every decimal field is checked with these before ``int()`` sees it.
"""

# A deliberately small bound: no length or count we parse needs more digits than this.
MAX_DIGITS = 19


def is_digits(text: str | bytes) -> bool:
    """True for a non-empty run of ASCII '0'-'9' only."""
    return text.isascii() and text.isdigit()


def parse_count(text: object, max_digits: int = MAX_DIGITS) -> int | None:
    """A non-negative decimal made of ASCII digits only, or None."""
    if type(text) is not str and type(text) is not bytes:
        return None
    if not text or len(text) > max_digits or not is_digits(text):
        return None
    return int(text)
