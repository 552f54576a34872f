"""The demo's audio tokenizer: the small corpus, the tiny model (d 128), two buckets.

Sized for a few minutes on a 2-core CPU (`speech-jax demo`); `train.max_minutes` is set by the demo
from its budget, `train.steps` is the schedule's length when time allows."""
from experiments.tokenizer import tiny


def get_config():
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 16
    c.optim.warmup_steps = 50
    c.train.steps = 1000
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
