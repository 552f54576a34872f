"""Audio tokenizer, small: d 256, 4 + 4 layers; a single accelerator or a patient CPU."""
from experiments.tokenizer import tiny


def get_config():
    c = tiny.get_config()
    c.model.update(dict(d_model=256, num_layers=4, num_heads=8, num_kv_heads=4, mlp_dim=1024,
                        codebook_size=1024, code_dim=16))
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 32
    c.data.max_seconds = 6.0  # espeak_tts/small: median 2.4 s, 99th percentile 4 s, longest 5.5 s
    c.data.buckets_seconds = (2.0, 2.4, 2.8, 3.2, 4.0, 6.0)  # with length grouping: ~19 % padding
    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 1000
    c.train.steps = 20000
    c.train.eval_every = 2000
    c.train.ckpt_every = 2000
    return c
