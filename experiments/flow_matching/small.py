"""Latent flow matching, small."""
from experiments.flow_matching import tiny


def get_config():
    c = tiny.get_config()
    c.model = tiny.model_defaults()
    c.pretrained.update(dict(ar_workdir="workdirs/ar_small", flow_vae_workdir="workdirs/flow_vae_small"))
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 16
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 500
    c.train.steps = 20000
    c.train.eval_every = 2000
    c.train.ckpt_every = 2000
    return c
