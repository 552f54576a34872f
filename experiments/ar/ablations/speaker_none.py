"""Ablation "prompt only": no speaker vector; the voice comes from the one-shot prompt alone."""
from experiments.ar import small


def get_config():
    c = small.get_config()
    c.model.speaker = "none"
    c.model.one_shot_prob = 1.0  # without a speaker vector only the prompt can carry the voice
    return c
