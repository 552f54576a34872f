"""The demo's AR transformer + speaker encoder: the small corpus, the tiny model, two buckets.

`data.extracted` and the vocabulary sizes come from the demo's `extract` run."""
from experiments.ar import tiny


def get_config():
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.max_text_len = 96
    c.data.batch_size = 16
    c.train.steps = 2000
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
