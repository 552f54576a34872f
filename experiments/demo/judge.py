"""The demo's judge: the small judge (`experiments/judge/small.py`), its own time outside the TTS budget.

`speech-jax demo` trains it after the four TTS stages for `train.max_minutes` (or --judge-minutes), and
scores the synthesis and espeak's ground truth with it. From a two-hour budget on (`step_scale` ≥ 4: the
long recipe) it trains twice the schedule: on `varied_large` its CER on espeak's unseen voices is 8.0 % after
1800 steps and 4.7 % after 3600 (16 minutes on a 2-core CPU; docs/what_limits_quality.md)."""
from experiments.demo import LONG_RECIPE_FROM_SCALE
from experiments.judge import small


def get_config(step_scale: float = 1.0):
    c = small.get_config()
    c.data.extra_eval_splits = ()  # the demo scores test_unseen itself (ground truth and synthesis)
    c.train.eval_every = 0
    c.train.max_minutes = 15.0
    if step_scale >= LONG_RECIPE_FROM_SCALE:
        c.train.steps *= 2
        c.train.max_minutes = 20.0
    return c
