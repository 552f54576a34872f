"""A stage's text units: BPE pieces of the text (the paper's choice) or espeak phonemes (`data.text_units`).

Both give `encode(text, language)`, `decode(ids)`, `vocab_size`, `needs_language`, `token_ratios` (the
length bounds of decoding, in audio tokens a unit) and `save(directory)`
(the serving bundle's copy), so the pipeline, the training loop and the synthesiser read text one way.
Phonemes are a grapheme-to-phoneme front end: what a small corpus needs, where BPE over characters meets
unseen words and (in Chinese and Cantonese) unseen characters at test time.
"""
from __future__ import annotations

import os

from speech_jax.text.bpe import BpeTokenizer
from speech_jax.text.phonemes import PhonemeVocab, cache_readings

KINDS = ("bpe", "phonemes")


class BpeUnits:
    """The corpus's BPE model as text units; the language is not needed."""

    needs_language = False
    FILE = "bpe.model"
    token_ratios = (2.0, 20.0)  # (min, max) audio tokens a BPE piece at decoding: CosyVoice's bounds

    def __init__(self, bpe: BpeTokenizer):
        self.bpe = bpe

    @property
    def vocab_size(self) -> int:
        return self.bpe.vocab_size

    def encode(self, text: str, language: str | None = None) -> list[int]:
        del language
        return self.bpe.encode(text)

    def decode(self, ids) -> str:
        return self.bpe.decode(ids)

    def save(self, directory: str) -> str:
        with open(os.path.join(directory, self.FILE), "wb") as f:
            f.write(self.bpe.to_bytes())
        return self.FILE


def kind(data_config) -> str:
    k = data_config.get("text_units", "bpe")
    if k not in KINDS:
        raise ValueError(f"data.text_units must be one of {KINDS}, got {k!r}")
    return k


def resolve_phonemes(config) -> None:
    """Fixes `data.phonemes`, the symbol inventory, when empty: espeak's symbols over the training split's
    texts (so the same corpus always gives the same labels), kept in the config every checkpoint saves."""
    data = config.data
    marks = bool(data.get("phoneme_marks", False))
    if data.phonemes:
        PhonemeVocab(data.phonemes, marks)  # validates
        return
    from data_pipelines.sources import split_index
    index = split_index(data.name, data.data_dir, data.train_split)  # texts without reading any audio
    pairs = set(zip(index["text"], index["language"]))
    cache_corpus_readings(data.name, data.data_dir, pairs)
    data.phonemes = PhonemeVocab.build(sorted(pairs), marks).symbols


def cache_corpus_readings(name: str, data_dir: str, texts_and_languages) -> None:
    """espeak's readings of a corpus's texts, kept in this process through the corpus's own cache file."""
    from data_pipelines.sources import corpus_dir
    cache_readings(texts_and_languages, os.path.join(corpus_dir(name, data_dir), "phonemes.json"))


def from_config(data_config):
    """The units a stage's `data` config names (its `phonemes` inventory resolved, or its BPE model)."""
    if kind(data_config) == "phonemes":
        if not data_config.get("phonemes"):
            raise ValueError("data.phonemes is empty: the stage resolves it from its training split")
        return PhonemeVocab(data_config.phonemes, bool(data_config.get("phoneme_marks", False)))
    from data_pipelines.pipeline import default_bpe_path
    path = default_bpe_path(data_config)
    if not os.path.exists(path):
        raise FileNotFoundError(f"BPE model {path} not found; run `speech-jax prepare` for "
                                f"{data_config.name} in {data_config.data_dir} or set data.bpe_model")
    return BpeUnits(BpeTokenizer.load(path))


def load(path: str):
    """Units saved by `save` (a bundle's file)."""
    return PhonemeVocab.load(path) if path.endswith(".json") else BpeUnits(BpeTokenizer.load(path))
