"""espeak's phonemes as CTC labels: the units of the intelligibility judge.

Characters of the corpus's text cannot be the judge's units: its test sentences are held out, and a
third of their Chinese and Cantonese characters never occur in training (homophones aside). What the
espeak corpus's audio carries is espeak's own reading of the text, so the judge recognises that:
espeak's IPA transcription, one label per IPA character (a base or a combining mark), without the
stress marks, word spaces and language-switch tags, which are not segments one can hear apart.
"""

from __future__ import annotations

import functools
import re

BLANK_ID, UNK_ID = 0, 1  # the CTC blank doubles as padding; unknown symbols map to UNK
_NUM_SPECIALS = 2
_UNK_TEXT = "?"
_LANGUAGE_TAG = re.compile(r"\([a-z-]+\)")  # "(en)tʃˈaɪniːz(ja)": espeak switching voices mid-word
_DROPPED = str.maketrans("", "", "ˈˌ")


@functools.lru_cache(maxsize=65536)
def phonemize(text: str, language: str) -> str:
  """The phoneme string the judge is trained to hear for `text` read in `language` (an espeak name)."""
  from data_pipelines.espeak_tts import synth

  try:
    ipa = synth.phonemes(text, language)
  except synth.EspeakError as e:  # e.g. a language espeak has no voice for: unusable, like empty text
    raise ValueError(str(e)) from e
  ipa = _LANGUAGE_TAG.sub("", ipa).translate(_DROPPED)
  return "".join(ipa.split())


class PhonemeVocab:
  """Phoneme string <-> label ids over a fixed symbol inventory (a string, kept in the judge's config)."""

  blank_id, unk_id = BLANK_ID, UNK_ID

  def __init__(self, symbols: str):
    if not symbols or len(set(symbols)) != len(symbols):
      raise ValueError(f"phoneme symbols must be a non-empty string of distinct characters, got {symbols!r}")
    self.symbols = symbols
    self._ids = {s: i + _NUM_SPECIALS for i, s in enumerate(symbols)}

  @classmethod
  def build(cls, texts_and_languages) -> "PhonemeVocab":
    """The inventory of every symbol espeak uses for these (text, language) pairs, in code-point order."""
    seen = set()
    for text, language in texts_and_languages:
      seen.update(phonemize(text, language))
    if not seen:
      raise ValueError("no phonemes: the texts are empty")
    return cls("".join(sorted(seen)))

  @property
  def vocab_size(self) -> int:
    return len(self.symbols) + _NUM_SPECIALS

  def encode_phonemes(self, phonemes: str) -> list[int]:
    return [self._ids.get(s, UNK_ID) for s in phonemes]

  def encode(self, text: str, language: str) -> list[int]:
    """Label ids of `text`; ValueError when espeak reads nothing in it."""
    ids = self.encode_phonemes(phonemize(text, language)) if text.strip() else []
    if not ids:
      raise ValueError(f"no phonemes in {text!r} ({language})")
    return ids

  def decode(self, ids) -> str:
    """Ids back to a phoneme string; blanks dropped, unknowns as '?'."""
    return "".join(self.symbols[i - _NUM_SPECIALS] if i >= _NUM_SPECIALS else _UNK_TEXT
                   for i in map(int, ids) if i != BLANK_ID)
