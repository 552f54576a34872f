"""AR transformer, small: d 256, 4 layers (the MFU target of the benchmark)."""
from experiments.ar import tiny


def get_config():
    c = tiny.get_config()
    c.model = tiny.model_defaults()
    c.data.name = "espeak_tts/small"
    c.data.max_text_len = 96
    c.data.buckets_seconds = (2.0, 2.4, 2.8, 3.2, 4.0, 6.0)
    c.data.batch_size = 16
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 500
    c.train.steps = 20000
    c.train.eval_every = 2000
    c.train.ckpt_every = 2000
    return c
