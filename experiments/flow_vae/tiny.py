"""Flow-VAE (DAC-style conv VAE on waveform + normalizing-flow KL + GAN decoder), CPU-sized."""
import ml_collections

from experiments.common import base_config

# DAC's 7 log-mel scales: (window = n_fft, n_mels), hop = window / 4.
DAC_MEL_SCALES = ((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320))


def model_defaults() -> ml_collections.ConfigDict:
    """Every field the Flow-VAE stage reads; sizes below override what differs."""
    return ml_collections.ConfigDict(dict(
        # Generator: encoder channels double at every stride; decoder channels halve at every upsampling.
        # "wave": DAC Snake convs at every rate | "mel" / "istft": frame-rate ConvNeXt (models/vocos.py).
        encoder="wave", decoder="wave",
        channels=32, decoder_channels=256, strides=(2, 4, 5, 8),  # 320 samples = 50 Hz at 16 kHz
        residual_dilations=(1, 3, 9), kernel_size=7, latent_dim=64,
        frame_dim=256, frame_mlp_dim=768, frame_layers=8, encoder_n_mels=80,  # the frame-rate design
        # ... analysing (encoder) and rendering (decoder) r STFT frames a latent frame, of hop / r samples and
        # a 4·hop / r window, while its layers run at the latent's rate (1: the latent's own hop).
        encoder_subframes=1, decoder_subframes=1,
        sample_rate=16000,  # the mel encoder's; must equal data.sample_rate
        use_flow=True, flow_layers=4, flow_hidden=64, flow_kernel=5,  # False: the plain-VAE ablation
        dtype="float32",
        # Discriminators: multi-period + multi-band multi-resolution complex STFT.
        mpd_periods=(2, 3, 5, 7, 11), mpd_channels=32, mpd_max_channels=1024,  # widths c·(1, 4, 16, 32), capped
        stft_ffts=(512, 1024, 2048), stft_channels=32, stft_bands=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0),
        # Losses (DAC weights); the KL weight ramps up linearly over kl_warmup_steps.
        mel_scales=DAC_MEL_SCALES, lambda_mel=15.0, lambda_adv=1.0, lambda_fm=2.0,
        # disc_start_step: the GAN's first step; 0 from the start, -1 never (reconstruction only: the step
        # leaves the discriminators out and compiles faster).
        kl_weight=1e-3, kl_warmup_steps=1000, disc_start_step=0,
        # A floor on the posterior's σ (0: none, the paper's). At kl_weight 1e-3 σ settles near 1-2 % of the
        # latent's spread, so the decoder never sees latents off the encoder's means, and renders the ones
        # flow matching samples (about 0.65 of the spread from them) unvoiced; a floor trains it on a
        # neighbourhood of every mean (docs/what_limits_quality.md). An absolute floor the encoder escapes by
        # scaling its latents up; `min_latent_std_ratio` floors σ at that fraction of each channel's spread in
        # the batch instead (0: none).
        min_latent_std=0.0, min_latent_std_ratio=0.0,
        # Multi-resolution linear STFT magnitude loss (spectral convergence + log L1) at these windows; 0 is
        # DAC's recipe. Its fine frequency grid resolves harmonics, which only coherent phase across frames
        # renders, so the decoder learns voicing from it long before any discriminator starts.
        lambda_stft=0.0, stft_loss_ffts=(512, 1024, 2048),
        # Phase-derivative losses (instantaneous frequency and group delay against the input's, APNet's
        # idea; models/gan_losses.py): voiced frames need harmonics whose phases advance coherently, which
        # magnitude losses leave free. 0: off.
        lambda_phase=0.0, phase_loss_ffts=(512, 1024),
        eval_stft_ffts=(512, 1024, 2048),  # the MS-STFT distance reported at evaluation
        # Evaluation also decodes the means plus this much noise (× each utterance's latent spread) and reports
        # the voicing kept (`noised_voiced_recall`, `noised_pitch_recall`): the decoder's robustness to latents
        # off its encoder's means, such as flow matching's (0: not measured; it costs a decode and pYIN).
        eval_latent_noise=0.0))


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "flow_vae"
    c.model = model_defaults()
    # Sized for a 2-core CPU (the test config): a thin encoder, the MPD capped at 32 channels (its
    # 128/256-channel layers were most of the step's FLOPs).
    c.model.update(dict(channels=4, decoder_channels=64, latent_dim=16, flow_hidden=32, mpd_channels=4,
                        mpd_max_channels=32, stft_ffts=(128, 256, 512), stft_channels=8,
                        mel_scales=((64, 10), (128, 20), (256, 40), (512, 80)), kl_warmup_steps=100))
    # The frame-rate encoder and decoder (models/vocos.py): on a CPU they train ~10x more audio a second
    # than the DAC convs and resynthesise voiced speech within minutes (docs/flow_vae_frame_rate.md);
    # the DAC design stays one switch away (ablations/dac.py).
    c.model.update(dict(encoder="mel", decoder="istft", frame_dim=64, frame_mlp_dim=192, frame_layers=2))
    c.data.name = "espeak_tts/tiny"
    c.data.with_reference = False
    # Random fixed-length segments (shorter utterances are padded and masked).
    c.data.min_seconds = 0.5
    c.data.max_seconds = 1.0
    c.data.buckets_seconds = (1.0,)
    c.data.long_utterances = "crop"
    c.data.batch_size = 8
    c.optim.update(dict(name="adamw", learning_rate=1e-3, b1=0.8, b2=0.99, weight_decay=0.01,
                        schedule="exponential", decay_rate=0.9999, warmup_steps=0, clip_norm=10.0,
                        disc_learning_rate=0.0,  # 0: the generator's
                        flat_state=True))  # one vector a network for the optimizer: a much faster CPU compile
    c.train.steps = 1000
    c.train.eval_every = 250
    c.train.ckpt_every = 250
    c.train.eval_batches = 2
    return c
