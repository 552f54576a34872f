"""Flow-VAE, paper scale: DAC's design at 24 kHz (encoder 64 channels doubling, decoder 1536 halving,
strides 2·4·6·10 = 480 → 50 Hz, latent 64) with its discriminators.

Like DAC and BigVGAN it trains on short random segments (1 s here): the convolutions see only a few
hundred milliseconds, and a decoder at 1536 channels over 30 s of samples would not fit a chip. bf16
compute over fp32 parameters, FSDP over every chip, global batch 256 segments. No layer stack to scan."""
from experiments.flow_vae import base


def get_config():
    c = base.get_config()
    c.model.update(dict(channels=64, decoder_channels=1536, latent_dim=64, mpd_channels=32,
                        stft_channels=32, dtype="bfloat16"))
    c.data.min_seconds = 0.5
    c.data.max_seconds = 1.0
    c.data.buckets_seconds = (1.0,)
    c.data.batch_size = 256
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    return c
