"""The demo's AR transformer + speaker encoder: the small corpus, a CPU-sized model, two buckets.

`data.extracted` and the vocabulary sizes come from the demo's `extract` run. The text goes in as espeak
phonemes with stress marks and word spaces (a G2P front end): the test sentences' words, and a third of
their Chinese characters, never occur in the 2.5k training utterances, so BPE over them cannot generalise;
the paper's BPE input stays the default (`data.text_units = "bpe"`).

The transformer is twice tiny's width at twice its learning rate: measured with the tokenizer's CTC head
over free-running tokens (experiments/token_cer_probe.py, docs/what_limits_quality.md), tiny's AR said no
words even of its training sentences after 1431 steps (CER 0.89), this one 0.78 after 750 steps of about
the same wall time. `train.steps` is about what the demo's time share holds on a 2-core CPU, so the cosine
schedule has decayed when the share runs out: 700 steps took 7.5 minutes there with the static layout, and
the packed one (`model.pack_prompt_slots`) makes a step about a quarter shorter, so 900 steps of 16 rows;
rows of 8 take 1800 in the same time and read better. Guided attention (a diagonal prior on two heads of
layer 2's attention to the text) makes the free-running tokens say more of their text at the same steps (CER
0.72 against 0.76–0.80 unguided after 700 steps, docs/what_limits_quality.md).

From two hours on (the long recipe) the AR is larger (d 192, 6 layers, 2.2× the step time) on a schedule the
demo fits to its share at its probed speed (`speech_jax.demo.fitted_steps`; unprobed, 540 × `step_scale`): on
`varied_large`, the d 128 AR's teacher-forced accuracy on unseen voices was flat at 0.470 from 4200 of its 6300
steps; this one reaches 0.484 in 3500 (72 minutes against 60), and behind the same flow matching reads unseen
voices at judge CER 0.145 against 0.155 (48 lines, three sampling seeds, each seed better;
docs/what_limits_quality.md, "A larger AR for the long recipe")."""
from experiments.ar import tiny
from experiments.demo import FIT_SCHEDULE_AT, LONG_RECIPE_FROM_SCALE


def get_config(step_scale: float = 1.0):
    c = tiny.get_config()
    c.data.name = "espeak_tts/small"
    c.data.text_units = "phonemes"
    c.data.phoneme_marks = True
    c.data.max_text_len = 96  # phonemes with marks: 87 at most in espeak_tts/small's train split
    # Packed rows (speech_jax/models/ar_layout.py): on varied_large, 270 slots where the static layout has 370
    # (the 3 s bucket) and 345 for 445 (6 s), room for the prompts of 98 % and 99.5 % of the one-shot rows
    # (the others train zero-shot that step); a step about a quarter shorter (experiments/bench_ar.py).
    c.model.pack_prompt_slots = 96
    c.model.update(dict(d_model=128, num_layers=4, num_heads=4, num_kv_heads=2, mlp_dim=384))
    c.model.update(dict(guided_attention_weight=1.0, guided_attention_layer=2, guided_attention_sigma=0.2))
    c.optim.learning_rate = 2e-3
    # Rows of 8 for twice the steps: on the CPU a step costs about what its rows do (experiments/bench.py: 0.101 s
    # against 0.218 at 16), and at the demo's budget the AR learns more from more, smaller steps: judge CER 0.55
    # against 0.63 behind the same stages (two training seeds, 24 lines, two sampling seeds each;
    # docs/what_limits_quality.md, "Smaller batches at the demo's budget"). The long recipe keeps its 16 rows.
    c.data.batch_size = 8
    c.train.steps = 1800
    if step_scale >= LONG_RECIPE_FROM_SCALE:
        c.model.update(dict(d_model=192, num_layers=6, num_heads=6, num_kv_heads=2, mlp_dim=576))
        c.data.batch_size, c.train.steps = 16, 540
    else:
        c.train.fit_schedule_at = FIT_SCHEDULE_AT
    c.train.eval_every = 0
    c.train.ckpt_every = 250
    return c
