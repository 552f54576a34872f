"""AR transformer, paper scale (~0.5B with its speaker encoder, CosyVoice 2's LM size): d 1024, 24 layers,
GQA 16/4, 30 s of target tokens (750) with a 10 s one-shot prompt, 6561 codes (FSQ size of CosyVoice 2).

bf16 compute over fp32 parameters, scanned layers with "dots" remat, FSDP over every chip, global batch
256 sequences. Compile: experiments/compile_all.sh."""
from experiments.ar import base


def get_config():
    c = base.get_config()
    c.model.update(dict(d_model=1024, num_layers=24, num_heads=16, num_kv_heads=4, mlp_dim=4096,
                        spk_d_model=512, spk_layers=6, spk_heads=8, spk_mlp_dim=2048, spk_dim=512,
                        codebook_size=6561, text_vocab_size=16384,  # given, so that compiling needs no corpus
                        attention_impl="auto", dtype="bfloat16", scan_layers=True, remat="dots"))
    c.data.sample_rate = 24000
    c.mel.update(dict(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, fmax=12000.0))
    c.data.max_seconds = 30.0
    c.data.buckets_seconds = (5.0, 10.0, 20.0, 30.0)
    c.data.max_text_len = 384
    c.data.prompt_max_seconds = 10.0
    c.data.ref_seconds = (3.0, 10.0)
    c.data.batch_size = 256
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    return c
