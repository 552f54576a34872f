"""AR transformer, base: for accelerators (bf16, fused attention via "auto", scanned remat'd layers, FSDP)."""
from experiments.ar import small


def get_config():
    c = small.get_config()
    c.model.update(dict(d_model=1024, num_layers=16, num_heads=16, num_kv_heads=8, mlp_dim=4096,
                        spk_d_model=256, spk_layers=4, spk_heads=4, spk_mlp_dim=1024, spk_dim=512,
                        attention_impl="auto", dtype="bfloat16", scan_layers=True, remat="dots"))
    c.data.batch_size = 64
    c.optim.learning_rate = 3e-4
    c.train.steps = 200000
    c.mesh.data = 1
    c.mesh.fsdp = -1
    return c
