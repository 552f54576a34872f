"""The demo's audio tokenizer: the small corpus, the tiny model (d 128), two buckets, CTC over phonemes.

CTC over espeak's phonemes (two labels a token) instead of BPE pieces: on 2.5k utterances in eight
languages the BPE head barely learns (CTC loss 5.0 after 881 steps), so the tokens carried little of
the words; `experiments/ceilings.py` measures what the tokens keep.

Sized for a few minutes on a 2-core CPU (`speech-jax demo`); `train.max_minutes` is set by the demo
from its budget, `train.steps` is the schedule's length when time allows."""
from experiments.demo import FIT_SCHEDULE_AT, LONG_RECIPE_FROM_SCALE
from experiments.tokenizer import tiny


def get_config(step_scale: float = 1.0):
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.text_units = "phonemes"
    c.model.ctc_rate = 2
    # Tokens an AR stage can predict: with CTC at 0.5 beside the mel loss the codes kept pitch and timbre, and
    # the AR's unseen-speaker token accuracy stayed at 0.19-0.21 from step 1500 to 3000 (its judge CER did
    # not move); a heavier CTC term makes the codes phonetic and leaves the voice to the speaker vector.
    c.model.ctc_weight = 2.0
    # CTC on the encoder's features too: test_unseen CTC CER 0.55 / 0.53 at 750 / 1000 steps, against 0.62 /
    # 0.56 with the codes' CTC alone (docs/what_limits_quality.md).
    c.model.ctc_encoder_weight = 1.0
    # The decoder also sees the utterance's mel mean and spread, so the codes need not carry the voice: the
    # same sentence in two voices differs in 0.67 of its tokens (normalised edit distance) against 0.74
    # without, and test_unseen CTC CER is 0.55 / 0.47 / 0.48 at 500 / 750 / 1000 steps against 0.63 / 0.55 / 0.53.
    c.model.decoder_voice = True
    c.optim.warmup_steps = 50
    # Rows of 8 for nearly twice the steps (a row costs 8 % more than at 16; experiments/bench.py): at the
    # demo's budget more, smaller steps give tokens that say more (its CTC head reads unseen voices' tokens at
    # CER 0.38 against 0.43; docs/what_limits_quality.md, "Smaller batches at the demo's budget"). The long
    # recipe keeps the 16 rows it was measured with.
    c.data.batch_size = 8
    c.train.steps = 2800
    if step_scale >= LONG_RECIPE_FROM_SCALE:
        c.data.batch_size, c.train.steps = 16, 1500
    else:
        c.train.fit_schedule_at = FIT_SCHEDULE_AT
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
