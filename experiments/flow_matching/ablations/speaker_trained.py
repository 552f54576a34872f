"""Ablation: flow matching trains its own copy of the AR's speaker encoder (started from the AR's) instead of
reading the AR's, frozen. The demo's flow matching with it, measured in docs/what_limits_quality.md ("Flow
matching's own speaker encoder"): over the whole schedule (1200 steps) the clones voice far more of their
frames; within the 30-minute demo's share it costs steps (about 10 % a step), and the words lose more than the voicing
gains."""
from experiments.demo import flow_matching


def get_config(step_scale: float = 1.0):
    c = flow_matching.get_config(step_scale)
    c.model.speaker_encoder = "trained"
    return c
