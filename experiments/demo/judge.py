"""The demo's judge: the small judge (`experiments/judge/small.py`), its own time outside the TTS budget.

`speech-jax demo` trains it after the four TTS stages for `train.max_minutes` (or --judge-minutes), and
scores the synthesis and espeak's ground truth with it."""
from experiments.judge import small


def get_config():
    c = small.get_config()
    c.data.extra_eval_splits = ()  # the demo scores test_unseen itself (ground truth and synthesis)
    c.train.eval_every = 0
    c.train.max_minutes = 15.0
    return c
