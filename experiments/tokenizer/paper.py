"""Audio tokenizer, paper scale (~0.1B, DAC's order): d 768, 6 + 6 layers, 8192 codes, 30 s at 24 kHz.

For a pod: bf16 compute over fp32 parameters, scanned layers with remat, FSDP over every chip, a global
batch of 256 utterances (2.1 h of audio a step). `speech-jax compile --config experiments/tokenizer/paper.py
--topology v5p:4x4x4` (or v5e:16x16) prints what one chip holds (experiments/compile_all.sh: all stages)."""
from experiments.tokenizer import base


def get_config():
    c = base.get_config()
    c.model.update(dict(d_model=768, num_layers=6, num_heads=12, num_kv_heads=4, mlp_dim=3072,
                        codebook_size=8192, code_dim=32,
                        text_vocab_size=16384,  # the BPE's size bound, so that compiling needs no corpus
                        attention_impl="auto", dtype="bfloat16", scan_layers=True, remat="full"))
    c.data.max_seconds = 30.0
    c.data.buckets_seconds = (5.0, 10.0, 20.0, 30.0)
    c.data.max_text_len = 384  # BPE pieces of 30 s of speech, with room
    c.data.batch_size = 256
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    return c
