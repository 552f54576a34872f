"""Flow-VAE, base: DAC-sized at 24 kHz (strides 2·4·6·10 = 480 → 50 Hz), for accelerators."""
from experiments.flow_vae import small


def get_config():
    c = small.get_config()
    c.model.update(dict(channels=64, decoder_channels=1024, strides=(2, 4, 6, 10), mpd_channels=32,
                        stft_channels=32, dtype="bfloat16"))
    c.data.sample_rate = 24000
    c.model.sample_rate = 24000  # the model checks it equals data.sample_rate
    c.mel.update(dict(sample_rate=24000, hop_length=480, n_fft=1920, win_length=1920, fmax=12000.0))
    c.data.name = "espeak_tts/small_24000"
    c.data.batch_size = 32
    c.train.steps = 400000
    c.mesh.fsdp = -1
    c.optim.flat_state = False  # per-array optimizer state, sharded with its parameters
    c.mesh.data = 1
    return c
