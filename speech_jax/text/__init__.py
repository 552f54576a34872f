"""Text: script-agnostic normalisation (`normalize`), the BPE tokenizer (`bpe`), and espeak phonemes as
the CTC judge's labels (`phonemes`)."""

from speech_jax.text.bpe import BpeTokenizer
from speech_jax.text.normalize import TextError, normalize_text
