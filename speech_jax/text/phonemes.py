"""espeak's phonemes as CTC labels: the units of the intelligibility judge.

Characters of the corpus's text cannot be the judge's units: its test sentences are held out, and a
third of their Chinese and Cantonese characters never occur in training (homophones aside). What the
espeak corpus's audio carries is espeak's own reading of the text, so the judge recognises that:
espeak's IPA transcription, one label per IPA character (a base or a combining mark), without the
stress marks, word spaces and language-switch tags, which are not segments one can hear apart.

The same units can be a model's text input (`data.text_units = "phonemes"`): a grapheme-to-phoneme
front end, which a small corpus needs where BPE over characters cannot generalise to unseen words (and
unseen Han characters). As input, stress marks and word boundaries carry prosody, so `marks=True` keeps
them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import uuid

BLANK_ID, UNK_ID = 0, 1  # the CTC blank doubles as padding; unknown symbols map to UNK
_NUM_SPECIALS = 2
_UNK_TEXT = "?"
_LANGUAGE_TAG = re.compile(r"\([a-z-]+\)")  # "(en)tʃˈaɪniːz(ja)": espeak switching voices mid-word
_DROPPED = str.maketrans("", "", "ˈˌ")


# (text, language) -> espeak's reading with its marks, of a corpus's texts: `cache_readings` fills it.
_CORPUS_READINGS: dict[tuple[str, str], str] = {}


@functools.lru_cache(maxsize=65536)
def _espeak_reading(text: str, language: str) -> str:
  """espeak's IPA with stress marks and word spaces, its language-switch tags dropped."""
  from data_pipelines.espeak_tts import synth

  try:
    ipa = synth.phonemes(text, language)
  except synth.EspeakError as e:  # e.g. a language espeak has no voice for: unusable, like empty text
    raise ValueError(str(e)) from e
  return _without_tags(ipa)


def _espeak_readings(pairs: list[tuple[str, str]]) -> list[str | None]:
  """`_espeak_reading` of many pairs at once (None where espeak cannot read one)."""
  from data_pipelines.espeak_tts import synth
  return [None if ipa is None else _without_tags(ipa) for ipa in synth.phonemes_many(pairs)]


def _without_tags(ipa: str) -> str:
  return " ".join(_LANGUAGE_TAG.sub("", ipa).split())


def phonemize(text: str, language: str, marks: bool = False) -> str:
  """The phoneme string the judge is trained to hear for `text` read in `language` (an espeak name);
  with `marks`, stress marks and single spaces between words are kept."""
  reading = _CORPUS_READINGS.get((text, language)) or _espeak_reading(text, language)
  return reading if marks else "".join(reading.translate(_DROPPED).split())


def _espeak_version() -> str:
  from importlib import metadata
  return metadata.version("espeakng-loader")


def cache_readings(texts_and_languages, path: str) -> None:
  """Keeps espeak's readings of a corpus's texts in this process, read from the file at `path` (beside the
  corpus's record index) where it has them and written back with the rest, which espeak reads in one child
  process (0.2 s a thousand sentences; a child each took 17 ms a sentence from a JAX process, three minutes
  for the 10k of `varied_large`). A file of another espeak version is rebuilt; an unwritable one skipped."""
  version, stored = _espeak_version(), {}
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if isinstance(saved, dict) and saved.get("espeak") == version and isinstance(saved.get("readings"), dict):
      stored = saved["readings"]
  except (OSError, ValueError):
    pass  # absent, damaged or half-written: rebuilt
  pairs = set(texts_and_languages)
  missing = sorted(p for p in pairs if stored.get(p[1], {}).get(p[0]) is None)
  added = 0
  for (text, language), reading in zip(missing, _espeak_readings(missing) if missing else []):
    if reading is not None:  # None: unusable text, which the pipeline drops
      stored.setdefault(language, {})[text] = reading
      added += 1
  for text, language in pairs:
    reading = stored.get(language, {}).get(text)
    if reading is not None:
      _CORPUS_READINGS[(text, language)] = reading
  if added:
    # A name of its own: several processes (hosts) may write the file at once; the last complete one wins.
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dict(espeak=version, readings=stored), f, ensure_ascii=False)
      os.replace(tmp, path)
    except OSError as e:
      logging.info("could not cache espeak's readings at %s: %s", path, e)


class PhonemeVocab:
  """Phoneme string <-> label ids over a fixed symbol inventory (a string, kept in the stage's config).

  As a model's text units it reads text with its language (`needs_language`)."""

  blank_id, unk_id = BLANK_ID, UNK_ID
  needs_language = True
  # (min, max) audio tokens a unit, the decoder's length guard. Measured: English at espeak's slowest and
  # fastest corpus rates (135, 195 wpm) speaks 1.05-1.67 tokens (25 Hz) a phoneme with marks, ~1.5-2.5
  # without; BPE's (2, 20) would forbid EOS until speech 1.2-1.9x too long.
  token_ratios = (0.5, 8.0)
  FILE = "phonemes.json"

  def __init__(self, symbols: str, marks: bool = False):
    if not symbols or len(set(symbols)) != len(symbols):
      raise ValueError(f"phoneme symbols must be a non-empty string of distinct characters, got {symbols!r}")
    self.symbols, self.marks = symbols, bool(marks)
    self._ids = {s: i + _NUM_SPECIALS for i, s in enumerate(symbols)}

  @classmethod
  def build(cls, texts_and_languages, marks: bool = False) -> "PhonemeVocab":
    """The inventory of every symbol espeak uses for these (text, language) pairs, in code-point order."""
    seen = set()
    for text, language in texts_and_languages:
      seen.update(phonemize(text, language, marks))
    if not seen:
      raise ValueError("no phonemes: the texts are empty")
    return cls("".join(sorted(seen)), marks)

  def save(self, directory: str) -> str:
    """Writes the inventory into `directory` (a serving bundle); returns the file's name."""
    with open(os.path.join(directory, self.FILE), "w", encoding="utf-8") as f:
      json.dump(dict(symbols=self.symbols, marks=self.marks), f, ensure_ascii=False)
    return self.FILE

  @classmethod
  def load(cls, path: str) -> "PhonemeVocab":
    with open(path, encoding="utf-8") as f:
      d = json.load(f)
    return cls(d["symbols"], d.get("marks", False))

  @property
  def vocab_size(self) -> int:
    return len(self.symbols) + _NUM_SPECIALS

  def encode_phonemes(self, phonemes: str) -> list[int]:
    return [self._ids.get(s, UNK_ID) for s in phonemes]

  def encode(self, text: str, language: str) -> list[int]:
    """Label ids of `text`; ValueError when espeak reads nothing in it."""
    if not language:
      raise ValueError(f"phonemes need the text's language (an espeak name such as 'en'): {text!r}")
    ids = self.encode_phonemes(phonemize(text, language, self.marks)) if text.strip() else []
    if not ids:
      raise ValueError(f"no phonemes in {text!r} ({language})")
    return ids

  def decode(self, ids) -> str:
    """Ids back to a phoneme string; blanks dropped, unknowns as '?'."""
    return "".join(self.symbols[i - _NUM_SPECIALS] if i >= _NUM_SPECIALS else _UNK_TEXT
                   for i in map(int, ids) if i != BLANK_ID)
