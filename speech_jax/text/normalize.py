"""Script-agnostic text normalisation applied before BPE, at training and at synthesis alike.

Only canonicalises how text is written (Unicode form, quote and dash variants, whitespace); it keeps
case and every script, and expands nothing (numbers, abbreviations) since that is per language.
"""

from __future__ import annotations

import re
import unicodedata


class TextError(ValueError):
  """Text that cannot be used (not a string, empty after normalisation)."""


# Curly, low and reversed quotes plus primes collapse to ASCII; guillemets and CJK corner
# brackets are kept since they are a script's own punctuation.
_QUOTES = {c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u2035"}
_QUOTES.update({c: '"' for c in "\u201c\u201d\u201e\u201f\u2033\u2036"})
# Hyphens, dashes and the minus sign all become "-": one symbol for the model to learn.
_DASHES = {c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2e3a\u2e3b\ufe58"}
# Invisible characters that change nothing when read aloud. ZWJ / ZWNJ stay: emoji sequences
# and several scripts (Persian, Indic) depend on them.
_DROP = {c: None for c in "\u00ad\u200b\u2060\ufeff"}
# U+2581 is sentencepiece's word-boundary mark; as text it would decode back as a space.
_TABLE = str.maketrans({**_QUOTES, **_DASHES, **_DROP, "\u2581": " "})
_SPACE = re.compile(r"\s+")


def _is_control(ch: str) -> bool:
  return unicodedata.category(ch) == "Cc" and not ch.isspace()


def normalize_text(text: str) -> str:
  """NFKC, unified quotes and dashes, control characters dropped, whitespace collapsed, stripped.

  Raises TextError when `text` is not a string or nothing is left.
  """
  if not isinstance(text, str):
    raise TextError(f"expected str, got {type(text).__name__}")
  out = unicodedata.normalize("NFKC", text).translate(_TABLE)
  if any(_is_control(ch) for ch in out):
    out = "".join(ch for ch in out if not _is_control(ch))
  out = _SPACE.sub(" ", out).strip()
  if not out:
    raise TextError(f"empty text after normalisation: {text[:40]!r}")
  return out
