"""A style adapter, CPU-sized: rank-4 LoRA on a trained AR stage's decoder, trained on a style's corpus.

Model, mel and the corpus settings are the AR stage's (`pretrained.ar_workdir`, read when the run
starts), with the adapters added; the data fields below go on top (`data.name`: the style's corpus,
extracted with the AR's tokenizer; "" keeps the AR's)."""
import ml_collections

from experiments.common import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "style"
    c.model = ml_collections.ConfigDict()  # the AR stage's, with the adapters
    c.lora = ml_collections.ConfigDict(dict(rank=4, alpha=8.0))
    c.pretrained = ml_collections.ConfigDict(dict(ar_workdir=""))
    c.data = ml_collections.ConfigDict(dict(
        name="",        # "": the AR stage's corpus
        bpe_model="",   # "": the AR stage's
        data_dir="data",
        reference_corpus="",  # e.g. espeak_tts/small: neutral references for the style's utterances
        batch_size=8,
        shuffle_seed=0,
        extra_eval_splits=(),
    ))
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 10
    c.optim.weight_decay = 0.0  # decay would pull the adapters toward the base model
    c.train.steps = 200
    c.train.log_every = 10
    c.train.eval_every = 0
    c.train.ckpt_every = 100
    c.train.keep_checkpoints = 1
    return c
