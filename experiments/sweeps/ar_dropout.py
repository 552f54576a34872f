"""Does residual dropout keep the AR from memorising the corpus's sentences?

On the long recipe the AR's teacher-forced accuracy on unseen voices stops rising by step 2000 while its
training batches go on to 0.70 (`varied`, 2107 sentences; on `small`'s 361 the same by step 2100;
docs/what_limits_quality.md). Each trial is the demo's AR (`experiments/demo/ar.py`) for 2000 steps on a
finished demo's tokens, with or without dropout on every block's attention and MLP outputs (`model.dropout`),
scored every 500 steps on held-out sentences of seen voices (validation) and on unseen voices. About 19
minutes a trial on a 2-core CPU:

    speech-jax sweep experiments/sweeps/ar_dropout.py --out sweeps/ar_dropout --config.data.data_dir=D/data \\
        --config.data.bpe_model=D/data/espeak_tts/small/1.0.0/bpe.model

The held-out curves say whether dropout moves the peak later and higher; the training accuracy how much it
slows memorising.
"""
from speech_jax.sweep import Sweep, product


def get_sweep() -> Sweep:
    return Sweep(
        base="experiments/demo/ar.py",
        trials=product({"model.dropout": [0.0, 0.1]}),
        common={"train.steps": 2000, "train.eval_every": 500, "train.ckpt_every": 500, "train.log_every": 50,
                "data.extra_eval_splits": ("test_unseen",)},
        metrics=("token_accuracy", "eval/loss", "eval/token_accuracy", "eval_test_unseen/loss",
                 "eval_test_unseen/token_accuracy", "eval_test_unseen/one_shot_token_accuracy"),
        curves=("token_accuracy", "eval/token_accuracy", "eval_test_unseen/token_accuracy"))
