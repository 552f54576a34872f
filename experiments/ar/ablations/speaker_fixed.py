"""Ablation "SpkEmbed": a frozen speaker embedding (the reference's log-mel mean and std, no learned
encoder) in place of the jointly trained speaker encoder."""
from experiments.ar import small


def get_config():
    c = small.get_config()
    c.model.speaker = "fixed"
    return c
