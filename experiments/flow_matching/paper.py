"""Latent flow matching, paper scale: a ~0.3B DiT (d 1024, 12 layers + 2 token-encoder layers) over 30 s of 50 Hz Flow-VAE
latents (1500 frames), conditioned on the AR paper config's tokens and speaker encoder.

bf16 compute over fp32 parameters, scanned layers with "dots" remat, FSDP over every chip, global batch
256. The frozen parts' settings come from experiments/ar/paper.py and experiments/flow_vae/paper.py, so the
step compiles before those stages are trained; to train, point `pretrained.*_workdir` at them."""
from experiments.ar import paper as ar_paper
from experiments.flow_matching import tiny
from experiments.flow_vae import paper as vae_paper


def get_config():
    c = tiny.get_config()
    c.model = tiny.model_defaults()
    ar, vae = ar_paper.get_config(), vae_paper.get_config()
    c.model.update(dict(d_model=1024, num_layers=12, num_heads=16, num_kv_heads=16, mlp_dim=4096,
                        token_encoder_layers=2, codebook_size=ar.model.codebook_size,
                        latent_dim=vae.model.latent_dim, attention_impl="auto", dtype="bfloat16",
                        scan_layers=True, remat="dots"))
    c.pretrained.update(dict(ar_workdir="", flow_vae_workdir=""))
    with c.unlocked():
        c.speaker, c.vae = ar.model, vae.model
    c.data.name = "espeak_tts/small_24000"
    c.data.sample_rate = 24000
    c.mel = ar.mel  # the speaker encoder's
    c.data.max_seconds = 30.0
    c.data.buckets_seconds = (5.0, 10.0, 20.0, 30.0)
    c.data.ref_seconds = (3.0, 10.0)
    c.data.batch_size = 256
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 2000
    c.train.steps = 300000
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    return c
