"""Flow-VAE, small: a single accelerator, or a long CPU run."""
from experiments.flow_vae import tiny


def get_config():
    c = tiny.get_config()
    c.model = tiny.model_defaults()
    c.model.update(dict(channels=16, decoder_channels=256, latent_dim=64, mpd_channels=16, stft_channels=16,
                        kl_warmup_steps=1000))
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 16
    c.optim.learning_rate = 2e-4
    c.optim.decay_rate = 0.99999
    c.train.steps = 20000
    c.train.eval_every = 2000
    c.train.ckpt_every = 2000
    return c
