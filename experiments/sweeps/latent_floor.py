"""Does a floor on the Flow-VAE's posterior σ make its decoder voice latents off the encoder's means?

Flow matching's latents sit about 0.65 of the latent's spread from the posterior means of the same audio, and
the long recipe's decoder (σ at 1.8 % of the spread: it trained on the means alone) renders them unvoiced
(docs/what_limits_quality.md, "The chain's rungs"). `model.min_latent_std_ratio` floors σ at a share of each
channel's spread in the batch, so the decoder trains on a neighbourhood of every mean. Each trial is the
demo's Flow-VAE for 3000 steps, scored on resynthesis from the means (mel distance, PESQ, pitch recall) and on
the voicing it keeps with noise of half the spread added (`model.eval_latent_noise`), on the validation split
and on unseen voices. About 15 minutes a trial on a 2-core CPU:

    speech-jax sweep experiments/sweeps/latent_floor.py --out sweeps/latent_floor --config.data.data_dir=D

The floor that keeps resynthesis and voices the noised latents is the one to retrain flow matching on.
"""
from speech_jax.sweep import Sweep, product


def get_sweep() -> Sweep:
    return Sweep(
        base="experiments/demo/flow_vae.py",
        trials=product({"model.min_latent_std_ratio": [0.0, 0.2, 0.4]}),
        common={"train.steps": 3000, "train.eval_every": 1500, "train.ckpt_every": 500, "train.log_every": 50,
                "data.extra_eval_splits": ("test_unseen",), "model.eval_latent_noise": 0.5},
        metrics=("mel_loss", "kl", "eval/mel_distance", "eval/pesq_wb", "eval/pitch_recall",
                 "eval/noised_voiced_recall", "eval/noised_pitch_recall", "eval_test_unseen/pesq_wb",
                 "eval_test_unseen/pitch_recall", "eval_test_unseen/noised_voiced_recall",
                 "eval_test_unseen/noised_pitch_recall", "eval/latent_mean_std"),
        curves=("mel_loss", "kl"))
