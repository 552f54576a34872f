"""The demo's latent flow matching: the small corpus, the tiny DiT; the AR and Flow-VAE workdirs are set
by the demo.

`step_scale` is how many times its 30-minute schedules the demo's budget holds (the demo multiplies every
stage's steps by it). From 4 on (two hours: the long recipe) the DiT is twice as wide and deep at half the
steps (each costs 4×): in 27 minutes (a quarter of the steps) it read the true tokens at judge CER 0.202
against the tiny DiT's 0.241, and on `varied_large` twice those steps (5761 of 6500 in 54 minutes) read them
at 0.112 against 0.138 and voice 0.78 of the ground truth's frames against 0.60; at the 30-minute demo's share
it is no better and voices less (docs/what_limits_quality.md).

Below that the tiny DiT learns at 6e-3, six times the tiny config's rate, with flow times drawn logit-normal:
on `varied_large`'s unseen voices the true tokens through its 2000 steps read at judge CER 0.288 against 0.430
at 1e-3 and uniform times, and voice 0.32 of the ground truth's frames against 0.16 (docs/what_limits_quality.md,
"Flow matching's learning rate at the 30-minute demo's share")."""
from experiments.demo import LONG_RECIPE_FROM_SCALE
from experiments.flow_matching import tiny


def get_config(step_scale: float = 1.0):
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 16
    c.train.steps = 2000
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    c.optim.learning_rate = 6e-3
    c.model.time_sampling = "logit_normal"
    if step_scale >= LONG_RECIPE_FROM_SCALE:
        c.model.update(dict(d_model=128, num_layers=4, num_heads=8, num_kv_heads=4, mlp_dim=512,
                            token_encoder_layers=2))
        c.train.steps = 1000
        c.optim.learning_rate, c.model.time_sampling = 1e-3, "uniform"  # measured so; the others are not
    return c
