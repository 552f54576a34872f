"""AR transformer + jointly trained speaker encoder, CPU-sized; trains on `speech-jax extract` output."""
import ml_collections

from experiments.common import base_config


def model_defaults() -> ml_collections.ConfigDict:
    """Every field the AR stage reads; the sizes below override what differs."""
    return ml_collections.ConfigDict(dict(
        d_model=256, num_layers=4, num_heads=8, num_kv_heads=4, mlp_dim=1024, rope_theta=10000.0,
        attention_impl="auto",  # "auto" (blocked on CPU, xla elsewhere) | "blocked" | "einsum" | "xla"
        dtype="float32",
        scan_layers=False, remat="none",  # remat: "none" | "full" | "dots"
        text_vocab_size=0,        # 0: the corpus's BPE model
        codebook_size=0,          # 0: the tokenizer that extracted the tokens
        speaker="learnable",      # "learnable" | "fixed" (frozen mel statistics) | "none" (prompt only)
        spk_d_model=128, spk_layers=2, spk_heads=4, spk_mlp_dim=256, spk_dim=256,
        one_shot_prob=0.5,        # share of training examples with the reference as in-context prompt
        pack_prompt_slots=-1,     # >= 0: training packs each row's valid slots into fewer, with room for a
                                  # prompt of this many (text + tokens; longer ones train zero-shot); -1: static
        text_ctc_weight=0.0,      # alignment aid: CTC from the target slots to the text (0: off, the paper)
        text_ctc_rate=2,          # CTC labels a slot
        guided_attention_weight=0.0,  # alignment aid: diagonal prior on attention to the text (0: off, the paper)
        guided_attention_layer=2,     # which layer's attention (a Python index; 2 of 4 measured best)
        guided_attention_heads=2,     # its first heads so guided
        guided_attention_sigma=0.2,   # the diagonal's width, a fraction of the utterance (DC-TTS's; 0.4 did less)
        dropout=0.0,              # residual dropout in training (0: off, the paper is silent; CosyVoice's LM 0.1)
        token_noise=0.0,          # share of target-token inputs replaced by random codes in training (0: off)
        lora_rank=0,              # > 0: low-rank adapters on the decoder's projections (style stages)
        lora_alpha=16.0))         # adapters add (lora_alpha / lora_rank) · A·B


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "ar"
    c.model = model_defaults()
    c.model.update(dict(d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
                        spk_d_model=32, spk_layers=1, spk_heads=2, spk_mlp_dim=64, spk_dim=64))
    c.data.name = "espeak_tts/tiny"
    c.data.extracted = "default"
    c.data.with_prompt = True
    c.data.target_audio = False  # the step reads the target's tokens, not its audio
    c.data.long_utterances = "drop"  # text and tokens must describe the same audio
    c.data.max_seconds = 6.0
    c.data.buckets_seconds = (3.0, 6.0)
    c.data.max_text_len = 64
    c.data.prompt_max_seconds = 4.0
    c.data.ref_seconds = (1.0, 3.0)
    c.data.extra_eval_splits = ("test_unseen",)  # unseen speakers: accuracy and speaker EER
    c.data.batch_size = 8
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 50
    c.train.steps = 1000
    c.train.eval_every = 250
    c.train.ckpt_every = 250
    c.train.eval_batches = 2
    return c
