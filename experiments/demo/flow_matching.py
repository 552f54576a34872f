"""The demo's latent flow matching: the small corpus, a small DiT (d 128 x 2); the AR and Flow-VAE workdirs
are set by the demo.

`step_scale` is how many times its 30-minute schedules the demo's budget holds (the demo multiplies every
stage's steps by it). From 4 on (two hours: the long recipe) the DiT is twice as deep with twice the heads at
1000 steps a unit: in 27 minutes it read the true tokens at judge CER 0.202 against tiny's (d 64 x 2) 0.241,
and on `varied_large` 0.112 against 0.138, voicing 0.78 of the ground truth's frames against 0.60.

Below that the DiT learns at 6e-3, six times the tiny config's rate, with flow times drawn logit-normal (on
`varied_large`'s unseen voices the true tokens read at judge CER 0.288 against 0.430 at 1e-3 and uniform times),
and it is twice tiny's width: the Flow-VAE's 64-channel latent (experiments/demo/flow_vae.py) went through
d 64 (the true tokens at 0.583 against 0.420 for 16 channels); d 128 for 1200 steps, the minutes of tiny's 2000,
reads them at 0.405 and voices 0.46 of the frames against 0.34 (docs/what_limits_quality.md, "The DiT's width
against the latent's channels")."""
from experiments.demo import FIT_SCHEDULE_AT, LONG_RECIPE_FROM_SCALE
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
    # Twice tiny's width at 0.6 of its steps (a step costs 1.7x: the same minutes). The DiT reads a latent
    # frame of D channels through d_model: at d 64 the 64-channel latent read the true tokens at judge CER 0.58
    # (16 channels: 0.42); at d 128 in the same minutes 0.41 (0.39), voicing more.
    c.model.update(dict(d_model=128, num_heads=4, num_kv_heads=2, mlp_dim=256))
    c.train.steps = 1200
    if step_scale >= LONG_RECIPE_FROM_SCALE:
        c.model.update(dict(d_model=128, num_layers=4, num_heads=8, num_kv_heads=4, mlp_dim=512,
                            token_encoder_layers=2))
        c.train.steps = 1000
        c.optim.learning_rate, c.model.time_sampling = 1e-3, "uniform"  # measured so; the others are not
    else:
        c.train.fit_schedule_at = FIT_SCHEDULE_AT
    return c
