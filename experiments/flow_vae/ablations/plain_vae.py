"""Ablation: the plain VAE (standard-normal KL on z, no flow), otherwise the small Flow-VAE."""
from experiments.flow_vae import small


def get_config():
    c = small.get_config()
    c.model.use_flow = False
    return c
