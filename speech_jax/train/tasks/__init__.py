"""One task a training stage: model builder, loss and metrics; the loop is shared.

A task module provides `build_model(config, rngs)`, `loss_fn(model, batch, rng, step)`,
`eval_fn(model, batch)` and `flops_per_step(config, batch_shapes)`; optionally `host_eval(outputs,
labels, tokenizer, config) -> dict` for metrics computed on the host (e.g. CER, PESQ; `labels` holds
the batch's integer fields; with `host_eval_wanted(config) -> bool` where a configuration may not use
it, so the evaluation's arrays stay on the devices), `eval_artifacts(outputs, labels, directory, config)`
to write samples (wavs, plots) from the first evaluation batch, and `make_train_step(...)` / `make_optimizer(...)` to
replace the default single-optimizer step (then `loss_fn` is not needed); `summarize_eval(batches,
config) -> dict` for metrics over a whole evaluation (e.g. a speaker-verification EER), and
`tokens_in_batch(batch)` for a tokens/s figure.
"""
import importlib

TASKS = {"tokenizer": "speech_jax.train.tasks.tokenizer",
         "flow_vae": "speech_jax.train.tasks.flow_vae",
         "ar": "speech_jax.train.tasks.ar",
         "flow_matching": "speech_jax.train.tasks.flow_matching",
         "judge": "speech_jax.train.tasks.judge",
         "pvc": "speech_jax.train.tasks.pvc",
         "style": "speech_jax.train.tasks.style",
         "t2v": "speech_jax.train.tasks.t2v"}


def get_task(stage: str):
    if stage not in TASKS:
        raise ValueError(f"unknown stage {stage!r}; known stages: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[stage])
