"""Latent flow matching (DiT, OT-CFM), CPU-sized: tokens + speaker vector -> Flow-VAE latents.

Needs a trained AR stage (its speaker encoder, frozen) and Flow-VAE (the targets are its latents, its
decoder renders evaluation audio), and `speech-jax extract --flow-vae` features."""
import ml_collections

from experiments.common import base_config


def model_defaults() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        latent_dim=0,             # 0: the Flow-VAE's that extracted the latents
        codebook_size=0,          # 0: the tokenizer's
        spk_dim=0,                # set from the AR stage's speaker encoder
        d_model=256, num_layers=4, num_heads=8, num_kv_heads=4, mlp_dim=1024, rope_theta=10000.0,
        token_encoder_layers=2, attention_impl="einsum", dtype="float32", scan_layers=False, remat="none",
        # OT-CFM (REFERENCE.md defaults)
        sigma_min=1e-6, time_sampling="uniform",  # or "logit_normal"
        prompt_prob=0.5, prompt_min_frac=0.0, prompt_max_frac=0.3,  # a prefix given as prompt, not in the loss
        drop_prob=0.2,            # all conditions dropped together (classifier-free guidance)
        # Latents standardised on the extracted training latents (models/latent_norm.py): "global" (one scale),
        # "channel", or "none" (as the Flow-VAE gives them: a decoder whose latents spread 17× voiced 6 % of
        # its frames after 1000 steps against 31 % standardised; docs/what_limits_quality.md).
        latent_norm="global",
        # The speaker vector: "frozen" (the AR stage's encoder as it is: one vector serves both stages, saved
        # voices too) or "trained" (a copy of it trained by flow matching's loss; saved voices then need a
        # vector of that copy: speech_jax/infer/voice.py).
        speaker_encoder="frozen",
        # evaluation sampling
        eval_steps=10, eval_method="euler", eval_grid="cosine", eval_cfg_weight=0.7,
        eval_voicing=False))      # pYIN voicing of the evaluation's samples (host_eval; seconds per batch)


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "flow_matching"
    c.model = model_defaults()
    c.model.update(dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
                        token_encoder_layers=1))
    c.pretrained = ml_collections.ConfigDict(dict(ar_workdir="workdirs/ar_tiny",
                                                  flow_vae_workdir="workdirs/flow_vae_tiny"))
    c.speaker = ml_collections.ConfigDict()  # filled from the AR stage's config
    c.vae = ml_collections.ConfigDict()      # filled from the Flow-VAE stage's config
    c.data.name = "espeak_tts/tiny"
    c.data.extracted = "default"
    c.data.with_latents = True
    c.data.target_audio = False  # the step reads the target's tokens, not its audio
    c.data.long_utterances = "crop"  # crops fall on token boundaries: tokens and latents stay aligned
    c.data.max_seconds = 4.0
    c.data.buckets_seconds = (2.0, 4.0)
    c.data.ref_seconds = (1.0, 3.0)
    c.data.batch_size = 8
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 50
    c.train.steps = 1000
    c.train.eval_every = 250
    c.train.ckpt_every = 250
    c.train.eval_batches = 1
    return c
