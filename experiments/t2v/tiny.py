"""Text-to-voice (T2V), CPU-sized: a flow-matching sampler of speaker vectors from voice descriptions.

Model, mel and the corpus settings are the AR stage's (`pretrained.ar_workdir`, read when the run starts);
T2V reads its speaker space through the AR's speaker encoder. The data fields below go on top: every
utterance comes with a description of its speaker (`with_description`), no reference, no tokens."""
import ml_collections

from experiments.common import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "t2v"
    c.model = ml_collections.ConfigDict()  # the AR stage's
    c.t2v = ml_collections.ConfigDict(dict(
        desc_d_model=64, desc_layers=2, desc_heads=4, desc_mlp_dim=128,  # the description encoder
        flow_hidden=256, flow_layers=3, time_dim=64,                    # the velocity MLP
        cond_dropout=0.1,            # share of examples trained without their description (guidance)
        statistics_utterances=256,   # training utterances the speaker space's mean and std come from
    ))
    c.pretrained = ml_collections.ConfigDict(dict(ar_workdir=""))
    c.data = ml_collections.ConfigDict(dict(
        name="",        # "": the AR stage's corpus
        bpe_model="",   # "": the AR stage's
        data_dir="data",
        with_description=True,
        max_description_len=32,
        with_reference=False,
        with_prompt=False,
        with_latents=False,
        extracted="",    # the speaker encoder reads audio: no tokens needed
        target_audio=True,  # the utterance's own audio, which the AR stage's batches leave out
        batch_size=16,
        shuffle_seed=0,
        extra_eval_splits=("test_unseen",),  # unseen speakers' descriptions
    ))
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 20
    c.train.steps = 200
    c.train.log_every = 10
    c.train.eval_every = 100
    c.train.eval_batches = 2
    c.train.ckpt_every = 100
    c.train.keep_checkpoints = 1
    return c
