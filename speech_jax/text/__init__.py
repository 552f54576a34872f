"""Text: script-agnostic normalisation (`normalize`) and the BPE tokenizer (`bpe`)."""

from speech_jax.text.bpe import BpeTokenizer
from speech_jax.text.normalize import TextError, normalize_text
