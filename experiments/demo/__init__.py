"""The demo's stage configs: each takes the demo's `step_scale` (how many times their 30-minute schedules its
budget holds: `speech_jax.demo.step_scale`)."""

# From a two-hour budget on, the demo is the long recipe: stage configs that only pay off with more time
# (the larger AR, the wide DiT) switch on here, in one place.
LONG_RECIPE_FROM_SCALE = 4.0
# Below it, the stages whose cosine schedules depend on their length (tokenizer, AR, flow matching) fit that
# length to their share of the budget after this many steps of their 50-step warm-up (`train.fit_schedule_at`),
# timed on the machine they run on: the learning rate has decayed when the share runs out, on a machine of any
# speed (on one 0.77x the reference the configs' schedules stopped at 63-83 % of their length). The long
# recipe fits its schedules from a probe run instead (speech_jax.demo.fitted_steps).
FIT_SCHEDULE_AT = 40
