"""T2V for the demo's AR stage (`speech-jax demo`): its corpus's 56 training speakers, 1000 steps."""
from experiments.t2v import tiny


def get_config():
    c = tiny.get_config()
    c.data.batch_size = 32
    c.train.steps = 1000
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.ckpt_every = 500
    return c
