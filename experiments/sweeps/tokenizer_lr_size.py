"""Learning rate × model size for the audio tokenizer (it needs only the corpus, so the sweep runs from
scratch): three peak learning rates at two widths, two seeds each. Scored by the final training losses
and the validation split's reconstruction, CTC loss and codebook use.

    speech-jax sweep experiments/sweeps/tokenizer_lr_size.py --out sweeps/tokenizer_lr \\
        --config.data.data_dir=data
"""
from speech_jax.sweep import Named, Sweep, product

SIZES = [  # the tiny config's width and half of it
    Named("d128", {"model.d_model": 128, "model.num_heads": 4, "model.num_kv_heads": 2, "model.mlp_dim": 256}),
    Named("d64", {"model.d_model": 64, "model.num_heads": 2, "model.num_kv_heads": 1, "model.mlp_dim": 128}),
]


def get_sweep() -> Sweep:
    return Sweep(
        base="experiments/tokenizer/tiny.py",
        trials=product({"size": SIZES, "optim.learning_rate": [3e-4, 1e-3, 3e-3]}),
        seeds=(0, 1),
        common={"train.steps": 500, "train.eval_every": 500, "train.ckpt_every": 500, "train.log_every": 25},
        metrics=("loss", "mel_loss", "ctc_loss", "eval/loss", "eval/mel_loss", "eval/ctc_loss", "eval/perplexity"),
        curves=("loss", "mel_loss", "ctc_loss"))
