"""PVC for the demo's AR stage (`speech-jax demo`): one unseen speaker's few utterances, more steps."""
from experiments.pvc import tiny


def get_config():
    c = tiny.get_config()
    c.data.batch_size = 16
    c.train.steps = 300
    c.train.log_every = 25
    c.train.ckpt_every = 300
    return c
