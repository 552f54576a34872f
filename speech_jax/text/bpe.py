"""Multilingual BPE tokenizer on sentencepiece, with byte fallback so any Unicode text encodes.

Fixed special ids: pad 0 (also the CTC blank; encode never produces it), unk 1, bos 2, eos 3.
Characters outside the learnt vocabulary (unseen scripts, emoji) become UTF-8 byte pieces and
decode back exactly.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import re
from typing import Iterable

import sentencepiece as spm

from speech_jax.text.normalize import TextError, normalize_text

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
_NUM_SPECIALS = 4
_NUM_BYTES = 256
# Specials + all byte pieces + at least the word-boundary piece.
MIN_VOCAB_SIZE = _NUM_SPECIALS + _NUM_BYTES + 1
# Recommended for CJK: their character sets are large, the rarest chars fall back to bytes.
# Lowered (down to sentencepiece's floor) when the characters would not fit the vocabulary.
_CHARACTER_COVERAGE = 0.9995
_MIN_CHARACTER_COVERAGE = 0.98
_SPACE = "\u2581"  # sentencepiece's word-boundary mark.
_REQUIRED_CHARS_ERROR = re.compile(r"smaller than required_chars\. (\d+) vs (\d+)")

_log = logging.getLogger(__name__)


def _char_coverage_for(texts: list[str], max_chars: int) -> float:
  """Character coverage at which sentencepiece keeps at most `max_chars` characters.

  Mirrors its rule: characters are taken most frequent first while the fraction covered so far
  is below the coverage. Spaces count as the boundary mark, plus one dummy prefix a sentence.
  """
  counts = collections.Counter()
  for text in texts:
    counts.update(text.replace(" ", _SPACE))
  counts[_SPACE] += len(texts)
  total = sum(counts.values())
  ordered = sorted(counts.values(), reverse=True)
  if len(ordered) <= max_chars or _CHARACTER_COVERAGE <= sum(ordered[:max_chars]) / total:
    return _CHARACTER_COVERAGE
  return max(sum(ordered[:max_chars]) / total, _MIN_CHARACTER_COVERAGE)


def _train_proto(texts: list[str], vocab_size: int, coverage: float) -> bytes:
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts),
      model_writer=model,  # In memory: no .model / .vocab files beside the caller's.
      model_type="bpe",
      vocab_size=vocab_size,
      hard_vocab_limit=False,  # Small corpora may not yield vocab_size pieces; take fewer.
      byte_fallback=True,
      character_coverage=coverage,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
      normalization_rule_name="identity",  # normalize_text already ran; decode must invert exactly.
      split_digits=True,  # Numbers are not expanded; digit pieces generalise across them.
      num_threads=1,  # Deterministic.
      minloglevel=2,
  )
  return model.getvalue()


class BpeTokenizer:
  """Text <-> ids. Build with `train` or `load`; picklable (for data-loader workers)."""

  pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

  def __init__(self, model_proto: bytes, name: str = "<bytes>"):
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    except (RuntimeError, OSError, TypeError) as e:
      raise ValueError(f"{name}: not a sentencepiece model ({e})") from e
    ids = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
      raise ValueError(f"{name}: special ids {ids}, expected (pad, unk, bos, eos) = (0, 1, 2, 3)")
    if self._sp.piece_to_id("<0x00>") == UNK_ID:
      raise ValueError(f"{name}: model was trained without byte_fallback")
    self._proto = model_proto

  @classmethod
  def train(cls, texts: Iterable[str], path_prefix: str, vocab_size: int) -> "BpeTokenizer":
    """Trains on `texts` (normalised first; empty ones skipped), writes `path_prefix + ".model"`.

    The vocabulary may come out smaller than `vocab_size` on a small corpus. When the corpus has
    more distinct characters than fit, the rarest (up to 2% of character occurrences) fall back
    to bytes; beyond that a ValueError names the vocab_size needed.
    """
    if vocab_size < MIN_VOCAB_SIZE:
      raise ValueError(
          f"vocab_size {vocab_size} is too small: byte fallback needs {_NUM_SPECIALS} specials + "
          f"{_NUM_BYTES} byte pieces + at least 1, so at least {MIN_VOCAB_SIZE}")
    corpus = []
    for text in texts:
      try:
        corpus.append(normalize_text(text))
      except TextError:
        continue
    if not corpus:
      raise TextError("no non-empty text to train the tokenizer on")

    max_chars = vocab_size - _NUM_SPECIALS - _NUM_BYTES
    for _ in range(4):  # Our character count can differ slightly from sentencepiece's.
      coverage = _char_coverage_for(corpus, max_chars)
      try:
        proto = _train_proto(corpus, vocab_size, coverage)
        break
      except RuntimeError as e:
        match = _REQUIRED_CHARS_ERROR.search(str(e))
        if not match:
          raise
        have, need = int(match.group(1)), int(match.group(2))
        if coverage <= _MIN_CHARACTER_COVERAGE or max_chars <= need - have:
          raise ValueError(
              f"vocab_size {vocab_size} is too small for this corpus: covering "
              f"{_MIN_CHARACTER_COVERAGE:.0%} of its characters needs at least {need}") from None
        max_chars -= need - have
    else:
      raise ValueError(f"could not fit the corpus characters into vocab_size {vocab_size}")

    path = path_prefix + ".model"
    with open(path, "wb") as f:
      f.write(proto)
    return cls(proto, name=path)

  @classmethod
  def load(cls, path: str | os.PathLike) -> "BpeTokenizer":
    with open(path, "rb") as f:
      return cls(f.read(), name=os.fspath(path))

  def to_bytes(self) -> bytes:
    """The serialized model, e.g. for an export bundle."""
    return self._proto

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Normalises then encodes; raises TextError on empty text. Never yields pad_id."""
    ids = self._sp.encode(normalize_text(text), out_type=int)
    return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

  def decode(self, ids: Iterable[int]) -> str:
    """Ids back to text; pad / bos / eos are skipped."""
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < self.vocab_size]
    if bad:
      raise TextError(f"token ids out of range [0, {self.vocab_size}): {bad[:5]}")
    return self._sp.decode(ids)

  def __getstate__(self):
    return {"proto": self._proto}

  def __setstate__(self, state):
    self.__init__(state["proto"])
