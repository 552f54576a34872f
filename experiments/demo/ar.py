"""The demo's AR transformer + speaker encoder: the small corpus, the tiny model, two buckets.

`data.extracted` and the vocabulary sizes come from the demo's `extract` run. The text goes in as espeak
phonemes with stress marks and word spaces (a G2P front end): the test sentences' words, and a third of
their Chinese characters, never occur in the 2.5k training utterances, so BPE over them cannot generalise;
the paper's BPE input stays the default (`data.text_units = "bpe"`)."""
from experiments.ar import tiny


def get_config():
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.text_units = "phonemes"
    c.data.phoneme_marks = True
    c.data.max_text_len = 96  # phonemes with marks: 87 at most in espeak_tts/small's train split
    c.data.batch_size = 16
    c.train.steps = 2000
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
