"""The intelligibility judge (CTC phoneme recogniser), CPU-sized for tests: seconds per step on 2 cores."""
import ml_collections

from experiments.common import base_config


def model_defaults() -> ml_collections.ConfigDict:
    """Every field the judge reads; the sizes below override what differs."""
    return ml_collections.ConfigDict(dict(
        d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128, rope_theta=10000.0,
        conv_kernel=3,
        subsample=2,                 # output rate: 1 = 50 Hz, 2 = 25 Hz
        attention_impl="einsum", dtype="float32",
        freq_masks=0, freq_width=10, time_masks=0, time_width=10,  # SpecAugment (0 masks: off)
        freq_warp=0.0,               # mel-axis stretch by 1 ± freq_warp (0: off)
        utterance_norm=False,        # each mel channel normalised over the utterance (CMVN)
        mel_mean=-5.0, mel_std=3.0))  # fixed log-mel normalisation, as the tokenizer's


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "judge"
    c.model = model_defaults()
    c.data.text_units = "phonemes"  # labels: espeak's IPA of the text (speech_jax.text.phonemes)
    c.data.with_reference = False
    c.data.long_utterances = "drop"  # CTC needs the whole transcript's audio
    c.data.max_seconds = 6.0
    c.data.buckets_seconds = (3.0, 6.0)
    c.data.max_text_len = 160
    c.data.batch_size = 8
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 50
    c.train.steps = 500
    c.train.eval_every = 100
    c.train.ckpt_every = 500
    return c
