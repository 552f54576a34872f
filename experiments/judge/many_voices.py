"""The judge on espeak_tts/many_voices: as many utterances as small, over 4× its voices (32 a language), and
per-utterance mel normalisation (CMVN), so that it reads voices it has not heard. It never hears the voices
it scores in the demo (small's test_unseen, which many_voices trains on): `data.exclude_speakers_of`.

The small judge reads its own training voices almost perfectly (CTC loss 0.003) and espeak's held-out voices
at CER 0.21–0.24: seven voices a language are too few to learn what stays the same across voices."""
from experiments.judge import small


def get_config():
    c = small.get_config()
    c.data.name = "espeak_tts/many_voices"
    c.data.exclude_speakers_of = ("espeak_tts/small:test_unseen",)
    c.model.utterance_norm = True
    c.own_corpus = True  # inside `speech-jax demo` too: this corpus, not the demo's
    return c
