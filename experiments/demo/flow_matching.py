"""The demo's latent flow matching: the small corpus, the tiny DiT; the AR and Flow-VAE workdirs are set
by the demo.

`step_scale` is the demo's budget over 30 minutes (the demo multiplies every stage's steps by it). From 4
on (two hours: the long recipe) the DiT is twice as wide and deep, at a quarter of the steps since each
costs four times as much: measured on the long recipe's `varied` stages at the same 27 minutes, 3000 such
steps against 12000 of the tiny DiT gave training loss 0.54 against 0.59 and, through the chain's
rungs on 48 unseen-voice lines, judge CER 0.202 against 0.241 from the true tokens (voiced frames 0.57
against 0.45 of the ground truth's) and 0.351 against 0.388 from the text (docs/what_limits_quality.md).
At the 30-minute demo's share the tiny DiT is as good and voices more: on the 30-minute demo's stages, 650
steps of the wider DiT against 2000 of the tiny one (5.6 minutes each) read the true tokens at 0.552 against
0.549, voiced 0.23 against 0.29, and the text at 0.789 against 0.797; so the demo keeps the tiny DiT."""
from experiments.flow_matching import tiny

WIDE_FROM_SCALE = 4.0


def get_config(step_scale: float = 1.0):
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 16
    c.train.steps = 2000
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    if step_scale >= WIDE_FROM_SCALE:
        c.model.update(dict(d_model=128, num_layers=4, num_heads=8, num_kv_heads=4, mlp_dim=512,
                            token_encoder_layers=2))
        c.train.steps = 500
    return c
