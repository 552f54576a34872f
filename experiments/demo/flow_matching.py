"""The demo's latent flow matching: the small corpus, the tiny DiT; the AR and Flow-VAE workdirs are set
by the demo."""
from experiments.flow_matching import tiny


def get_config():
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 16
    c.train.steps = 2000
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
