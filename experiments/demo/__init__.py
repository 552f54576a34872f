"""The demo's stage configs: each takes the demo's `step_scale` (how many times their 30-minute schedules its
budget holds: `speech_jax.demo.step_scale`)."""

# From a two-hour budget on, the demo is the long recipe: stage configs that only pay off with more time
# (the larger AR, the wide DiT) switch on here, in one place.
LONG_RECIPE_FROM_SCALE = 4.0
