"""Audio tokenizer, accelerator size: d 1024, 8 + 8 layers, 24 kHz audio, bf16 compute."""
from experiments.tokenizer import tiny


def get_config():
    c = tiny.get_config()
    c.model.update(dict(d_model=1024, num_layers=8, num_heads=16, num_kv_heads=8, mlp_dim=4096,
                        codebook_size=8192, code_dim=32,
                        attention_impl="xla", dtype="bfloat16"))
    c.data.sample_rate = 24000
    c.mel.update(dict(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, n_mels=80,
                      fmax=12000.0))
    c.data.batch_size = 256
    c.data.max_seconds = 16.0
    c.data.buckets_seconds = (4.0, 8.0, 16.0)
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 2000
    c.train.steps = 300000
    c.train.eval_every = 5000
    c.train.ckpt_every = 5000
    return c
