"""Professional voice cloning (PVC), CPU-sized: fits one speaker's voice vector for a trained AR stage.

Model, mel and the corpus's settings (its name, text units, extracted tokens, lengths) are the AR
stage's (`pretrained.ar_workdir`, read when the run starts); the data fields below go on top of them.
`speech-jax pvc` fills pretrained.ar_workdir, data.data_dir, data.speaker and the split."""
import ml_collections

from experiments.common import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "pvc"
    c.model = ml_collections.ConfigDict()  # the AR stage's
    c.pretrained = ml_collections.ConfigDict(dict(ar_workdir=""))
    c.data = ml_collections.ConfigDict(dict(
        name="",                 # "": the AR stage's corpus
        bpe_model="",            # "": the AR stage's
        data_dir="data",
        speaker="",              # the corpus speaker id whose voice is fitted
        train_split="test_unseen",  # a held-out voice: the embedded corpus's unseen speakers
        eval_split="test_unseen",
        extra_eval_splits=(),
        with_reference=False,    # the voice vector replaces the reference
        with_prompt=False,       # zero-shot layout: no one-shot prompt
        with_latents=False,
        batch_size=8,
        group_window=1,          # a few utterances: no length grouping
        shuffle_seed=0,
        num_workers=0,
        prefetch=2,
    ))
    # Adam without weight decay: decay would pull the voice toward the zero vector, no voice at all.
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-2
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.0
    # The token loss plus anchor_weight × ‖v − v₀‖² / ‖v₀‖² (v₀: the starting mean vector); 0: token loss only.
    # fit_flow_matching: the voice file gives flow matching the fitted v too; False keeps v₀ there (`v_fm`).
    c.pvc = ml_collections.ConfigDict(dict(anchor_weight=0.0, fit_flow_matching=False))
    c.train.steps = 100
    c.train.log_every = 10
    c.train.eval_every = 0
    c.train.ckpt_every = 100
    c.train.keep_checkpoints = 1
    return c
