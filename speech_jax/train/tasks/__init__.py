"""One task a training stage: model builder, loss and metrics; the loop is shared.

A task module provides `build_model(config, rngs)`, `loss_fn(model, batch, rng, step)`,
`eval_fn(model, batch)` and `flops_per_step(config, batch_shapes)`; optionally `host_eval(outputs,
labels, tokenizer) -> dict` for metrics computed on the host (e.g. CER; `labels` holds the batch's
integer fields), and `make_train_step(...)` / `make_optimizer(...)` to replace the default
single-optimizer step.
"""
import importlib

TASKS = {"tokenizer": "speech_jax.train.tasks.tokenizer"}


def get_task(stage: str):
    if stage not in TASKS:
        raise ValueError(f"unknown stage {stage!r}; known stages: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[stage])
