"""The demo's Flow-VAE: the small corpus, the frame-rate encoder and decoder (models/vocos.py) on 1 s
segments, trained on reconstruction only (multi-scale mel L1, multi-resolution STFT, the flow KL).

At a budget of minutes on a CPU the discriminators would cost most of each step, so the GAN is left out
(`model.disc_start_step = -1`; a longer run sets the step it starts at). The STFT loss is what puts the
speaker's pitch into the output: with the mel loss alone the decoder rings at its frame rate (F0 100 Hz
for every voice; docs/flow_vae_frame_rate.md).

The 30-minute demo's latent has the paper's 64 channels: at its 861 steps the decoder reads at judge CER 0.095
against 0.168 for tiny's 16 (PESQ-WB 1.55 against 1.46), once flow matching is wide enough to generate it
(experiments/demo/flow_matching.py). The long recipe keeps 16: over P145's 9217 steps 64 channels resynthesise
better (PESQ-WB 2.16 against 1.95) but its flow matching (d 128 x 4) generates them worse (judge CER 10.9 %
against 9.1 %, voiced 0.39 against 0.51 of frames; a DiT twice as wide in the same minutes, 10.3 % and 0.41):
docs/what_limits_quality.md, "The Flow-VAE's latent" and "The DiT's width against the latent's channels"."""
from experiments.demo import LONG_RECIPE_FROM_SCALE
from experiments.flow_vae import tiny


def get_config(step_scale: float = 1.0):
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.batch_size = 16
    c.model.update(dict(frame_dim=192, frame_mlp_dim=576, frame_layers=6))
    c.model.disc_start_step = -1  # reconstruction only within the demo's budget (longer runs: a step to start at)
    # Linear-frequency STFT magnitudes resolve the harmonics that the mel bands blur: pitch-tracking
    # resynthesis (pYIN log-F0 correlation 0.48 against -0.06 with mel alone at the demo's budget).
    c.model.lambda_stft = 15.0
    # ... and the phase-derivative losses make its harmonics advance coherently, so they are heard as voiced:
    # at 3000 steps pitch recall 0.77 / 0.47 (validation / unseen voices) against 0.57 / 0.38 without, at the
    # same PESQ-WB (docs/what_limits_quality.md, "The decoder's voicing is in its phase").
    c.model.lambda_phase = 15.0
    # Flow matching's latents sit about 0.65 of the latent's spread from the encoder's means (the long recipe):
    # evaluations (longer runs set `train.eval_every`) report how much voicing the decoder keeps at 0.5.
    c.model.eval_latent_noise = 0.5
    if step_scale < LONG_RECIPE_FROM_SCALE:
        c.model.latent_dim = 64
        # Twice the phase weight keeps more voicing off the encoder's means (unseen voices at 1500 steps: noised
        # voiced recall 0.67 against 0.59, PESQ-WB 1.58 against 1.59), which flow matching's latents need: with
        # its noise at half scale the clones voice 0.31-0.38 of their frames against 0.20 (docs/what_limits_quality.md,
        # "Voicing: flow matching's starting noise and the phase weight"). The long recipe was measured at 15.
        c.model.lambda_phase = 30.0
    c.train.steps = 1500
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
