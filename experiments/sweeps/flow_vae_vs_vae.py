"""Flow-VAE vs the plain VAE (`model.use_flow=False`: standard-normal KL, nothing else changes), three seeds
each, compared by the stage's own resynthesis evaluation (PESQ wide and narrow band, MS-STFT distance, STOI,
multi-scale mel distance on the validation split) and the final training losses. The paper (table 5): plain
VAE PESQ-WB 4.20 / PESQ-NB 4.27 / MS-STFT 0.67, Flow-VAE 4.30 / 4.34 / 0.62. Seeds give the run-to-run
spread that one pair of runs cannot; at a CPU budget expect the difference to be inside it.

    speech-jax sweep experiments/sweeps/flow_vae_vs_vae.py --out sweeps/flow_vae \\
        --config.data.data_dir=data [--config.train.steps=300]
"""
from speech_jax.sweep import Sweep, product


def get_sweep() -> Sweep:
    return Sweep(
        base="experiments/flow_vae/tiny.py",
        trials=product({"model.use_flow": [True, False]}),
        seeds=(0, 1, 2),
        # the seed sets the data order too: the spread covers both
        seed_keys=("train.seed", "data.shuffle_seed"),
        common={"train.steps": 300, "train.eval_every": 300, "train.ckpt_every": 300, "train.log_every": 25,
                "train.eval_batches": 3},
        metrics=("mel_loss", "kl", "eval/pesq_wb", "eval/pesq_nb", "eval/stft_distance", "eval/stoi",
                 "eval/mel_distance"),
        curves=("mel_loss", "kl"))
