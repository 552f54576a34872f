"""One task a training stage: model builder, loss and metrics; the loop is shared.

A task module provides `build_model(config, rngs)`, `loss_fn(model, batch, rng, step)`,
`eval_fn(model, batch)` and `flops_per_step(config, batch_shapes)`; optionally `host_eval(outputs,
batch) -> dict` for metrics computed on the host (e.g. CER), and `make_train_step(...)` /
`make_optimizer(...)` when it needs more than one optimizer (GAN).
"""
import importlib

TASKS = {"tokenizer": "speech_jax.train.tasks.tokenizer"}


def get_task(stage: str):
    if stage not in TASKS:
        raise ValueError(f"unknown stage {stage!r}; known stages: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[stage])
