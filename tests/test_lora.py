"""Low-rank adapters: layers that are unchanged without them and until they train, merging that computes
what the adapters did, and the style stage: adapters trained through the loop on a frozen AR stage, which
synthesis then uses in the AR's place."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from speech_jax.layers.lora import LoRA, merge_adapters
from stages import FAST_COMPILE, ROOT, voice

STYLE = os.path.join(ROOT, "experiments", "style", "tiny.py")


def test_fresh_adapter_is_zero_and_shaped_like_the_weight():
    lora = LoRA((8,), (2, 4), rank=2, alpha=4.0, names_in="embed", names_out=None, rngs=nnx.Rngs(0))
    assert lora.delta().shape == (8, 2, 4)
    assert jnp.all(lora.delta() == 0)
    lora.b[...] = jnp.ones_like(lora.b[...])
    assert jnp.allclose(lora.delta().reshape(8, 8), 2.0 * lora.a[...] @ lora.b[...])


def test_rank_zero_is_an_error():
    with pytest.raises(ValueError, match="rank"):
        LoRA((8,), (8,), rank=0, alpha=1.0, names_in=None, names_out=None, rngs=nnx.Rngs(0))


def test_attention_rank_zero_is_the_old_layer_and_fresh_adapter_changes_nothing():
    from speech_jax.layers.attention import Attention
    x = jnp.ones((1, 5, 16)) * jnp.arange(16) / 16
    base = Attention(16, 2, rngs=nnx.Rngs(0))
    adapted = Attention(16, 2, lora_rank=2, lora_alpha=4.0, rngs=nnx.Rngs(0))
    assert not any("lora" in str(p) for p, _ in nnx.to_flat_state(nnx.state(base)))
    assert jnp.array_equal(base(x), Attention(16, 2, rngs=nnx.Rngs(0))(x))
    for n in "qkvo":
        getattr(adapted, f"w{n}")[...] = getattr(base, f"w{n}")[...]
    assert jnp.array_equal(base(x), adapted(x))
    adapted.lora_q.b[...] = jnp.ones_like(adapted.lora_q.b[...])
    assert not jnp.allclose(base(x), adapted(x))


def test_mlp_rank_zero_adds_nothing_and_a_fresh_adapter_changes_nothing():
    from speech_jax.layers.mlp import SwiGLU
    x = jnp.ones((1, 5, 16)) * jnp.arange(16) / 16
    base = SwiGLU(16, 32, rngs=nnx.Rngs(0))
    adapted = SwiGLU(16, 32, lora_rank=2, lora_alpha=4.0, rngs=nnx.Rngs(0))
    assert not any("lora" in str(p) for p, _ in nnx.to_flat_state(nnx.state(base)))
    assert jnp.array_equal(base(x), adapted(x))  # the adapters are created after the kernels, B = 0
    adapted.lora_down.b[...] = jnp.ones_like(adapted.lora_down.b[...])
    assert not jnp.allclose(base(x), adapted(x))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_merged_adapters_compute_what_the_adapters_did(scan_layers):
    from speech_jax.layers.transformer import Transformer
    adapted = Transformer(2, 16, 2, 1, 32, scan_layers=scan_layers, lora_rank=2, lora_alpha=4.0, rngs=nnx.Rngs(0))
    for i, (_, v) in enumerate(nnx.to_flat_state(nnx.state(adapted, nnx.LoRAParam))):  # updates everywhere
        v[...] = 0.3 * jax.random.normal(jax.random.key(i), v.shape)
    x = jax.random.normal(jax.random.key(100), (2, 5, 16))
    want = adapted(x)
    merge_adapters(adapted)
    assert not nnx.state(adapted, nnx.LoRAParam)
    plain = Transformer(2, 16, 2, 1, 32, scan_layers=scan_layers, rngs=nnx.Rngs(1))
    nnx.update(plain, nnx.state(adapted))  # the structure of a model built without adapters
    np.testing.assert_allclose(plain(x), want, atol=1e-5)


# --- the style stage: adapters trained through the loop on a frozen AR stage ------------------------

@pytest.fixture(scope="module")
def style_run(tiny_corpus, tiny_stages, tmp_path_factory):
    from speech_jax.config import apply_overrides, load_config
    from speech_jax.train.loop import train
    config = load_config(STYLE)
    config.pretrained.ar_workdir = tiny_stages["ar"]
    config.data.data_dir = tiny_corpus["data_dir"]
    config = apply_overrides(config, [
        "--config.train.steps=12", "--config.train.log_every=1", "--config.train.peak_flops=1e11",
        "--config.train.async_checkpointing=False", "--config.optim.learning_rate=0.02",
        "--config.optim.warmup_steps=0", f"--config.train.compiler_options={FAST_COMPILE}"])
    workdir = str(tmp_path_factory.mktemp("style"))
    train(config, workdir)
    return workdir


def test_style_stage_trains_only_the_adapters(style_run, tiny_stages):
    from speech_jax.train.metrics import read_metrics
    from speech_jax.train.restore import load_stage
    losses = [r["loss"] for r in read_metrics(style_run) if "loss" in r]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    _, graphdef, params, rest = load_stage(style_run, "style")
    flat = nnx.to_flat_state(params)
    # The trainable parameters are the adapters' A and B on q, k, v, o, gate, up, down of every block.
    assert flat and all(p[-1] in ("a", "b") and p[-2].startswith("lora_") for p, _ in flat)
    assert len(flat) == 2 * 7 * len(nnx.merge(graphdef, params, rest).frozen.decoder.blocks)
    assert any(float(jnp.abs(v[...]).max()) > 0 for p, v in flat if p[-1] == "b")  # moved from zero
    # Every base weight, as checkpointed with the adapters, is bit-identical to the AR stage's.
    _, ar_graphdef, ar_params, ar_rest = load_stage(tiny_stages["ar"], "ar")
    base = jax.tree.leaves(nnx.state(nnx.merge(ar_graphdef, ar_params, ar_rest)))
    frozen = jax.tree.leaves(rest["frozen"])
    assert len(base) == len(frozen)
    for x, y in zip(base, frozen):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_synthesis_with_a_style_uses_the_styled_ar(style_run, tiny_stages):
    from speech_jax.infer.style import styled_ar
    from speech_jax.infer.synthesizer import Synthesizer
    from speech_jax.train.restore import load_model
    config, ar = styled_ar(style_run)
    assert config.stage == "ar" and not nnx.state(ar, nnx.LoRAParam)
    _, base = load_model(tiny_stages["ar"], "ar")
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(nnx.state(ar)), jax.tree.leaves(nnx.state(base)))]
    assert max(moved) > 0  # the adapters' updates are in the decoder's weights
    synth = Synthesizer.from_workdirs(tiny_stages["tokenizer"], style_run, tiny_stages["flow_matching"])
    wav = synth.synthesize("hello there", voice(1.5), reference_sample_rate=16000,
                           language="en" if synth.needs_language else None)
    assert wav.ndim == 1 and wav.size > 0 and np.all(np.isfinite(wav))


def test_a_bundle_carries_a_style_as_its_adapters_only(style_run, tiny_stages, tmp_path):
    from speech_jax.cli import main
    from speech_jax.export.bundle import BundleError, load_bundle, read_manifest
    from speech_jax.infer.backend import Template
    from speech_jax.infer.style import styled_ar
    out = str(tmp_path / "bundle")
    assert main(["export", "--out", out, "--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
                 "--flow-matching", tiny_stages["flow_matching"], "--style", f"lively={style_run}"]) == 0
    manifest = read_manifest(out)
    style_bytes = manifest["files"][manifest["styles"]["lively"]]["bytes"]
    assert style_bytes < 0.5 * manifest["files"]["weights/ar.safetensors"]["bytes"]  # factors, not weights
    _, want = Template.split(styled_ar(style_run)[1])
    styled = load_bundle(out, style="lively").backend.weights["ar"]
    base = load_bundle(out).backend.weights["ar"]
    assert set(styled) == set(want)
    for k in want:
        np.testing.assert_allclose(np.asarray(styled[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    assert any(not np.array_equal(np.asarray(styled[k]), np.asarray(base[k])) for k in want)
    with pytest.raises(BundleError, match="no style 'calm'"):
        load_bundle(out, style="calm")


def test_style_stage_needs_an_ar_stage(tiny_stages):
    from speech_jax.config import load_config
    from speech_jax.train.tasks import style
    config = load_config(STYLE)
    with pytest.raises(ValueError, match="pretrained.ar_workdir"):
        style.resolve_config(config)
    config.pretrained.ar_workdir = tiny_stages["flow_vae"]
    with pytest.raises(ValueError, match="must hold an ar stage"):
        style.resolve_config(config)
