"""The demo's stage configs: each takes the demo's `step_scale` (its budget over 30 minutes)."""

# From a two-hour budget on, the demo is the long recipe: stage configs that only pay off with more time
# (the wide DiT, the AR's and the judge's longer schedules) switch on here, in one place.
LONG_RECIPE_FROM_SCALE = 4.0
