"""The demo's Flow-VAE: the small corpus, the tiny (CPU-sized) model on 1 s segments."""
from experiments.flow_vae import tiny


def get_config():
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.train.steps = 1000
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
