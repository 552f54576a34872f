"""Ablation: the demo's Flow-VAE with the DAC encoder and decoder (Snake convs at every rate, transposed
convs back to the sample rate) in place of the frame-rate ones; reconstruction first, discriminators
from step 600, as the demo trained it before."""
from experiments.demo import flow_vae


def get_config():
    c = flow_vae.get_config()
    c.model.update(dict(encoder="wave", decoder="wave"))
    c.model.disc_start_step = 600
    return c
