"""AR transformer, its sequence layout and the speaker encoder: layouts written out by hand, causality,
padding invariance, speaker modes, scan/remat equivalence, logical names, FLOPs."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from speech_jax import sharding
from speech_jax.audio.mel import MelSpec
from speech_jax.models.ar_layout import build_layout, build_prefix, pack_right
from speech_jax.models.ar_transformer import ARTransformer, flops_per_token
from speech_jax.models.speaker_encoder import SpeakerEncoder

K = 16
SOS, EOS = K, K + 1
SPEC = MelSpec(sample_rate=16000, n_fft=256, hop_length=160, win_length=256, n_mels=16)


def tiny_cfg(**kw):
    c = dict(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64, rope_theta=10000.0,
             attention_impl="einsum", dtype="float32", text_vocab_size=32, codebook_size=K,
             speaker="learnable", scan_layers=False, remat="none",
             spk_d_model=16, spk_layers=1, spk_heads=2, spk_mlp_dim=32, spk_dim=16)
    c.update(kw)
    return ml_collections.ConfigDict(c)


def forward_fn(model):
    """A jitted pure forward (params, layout, spk) -> logits, compiled once per shape."""
    graphdef, _ = nnx.split(model)
    return jax.jit(lambda state, layout, spk: nnx.merge(graphdef, state)(layout, spk))


# --- layout --------------------------------------------------------------------------------------

_build_layout = jax.jit(build_layout, static_argnames=("codebook_size", "use_speaker"))


def _layout(text, text_len, tokens, tokens_len, ptext, ptext_len, ptok, ptok_len, **kw):
    a = [np.asarray(x, np.int32) for x in (text, text_len, tokens, tokens_len, ptext, ptext_len, ptok, ptok_len)]
    return _build_layout(*a, codebook_size=K, **kw)


ONE_SHOT = dict(  # two rows, Lp 2, Lt 4, Pa 3, La 3
    text=[[5, 0, 0, 0], [5, 6, 7, 9]], text_len=[1, 4],
    tokens=[[1, 2, 3], [9, 0, 0]], tokens_len=[3, 1],
    ptext=[[8, 9], [8, 0]], ptext_len=[2, 1],
    ptok=[[3, 4, 0], [3, 4, 5]], ptok_len=[2, 3])


def test_zero_shot_layout_by_hand():
    lay = _layout([[5, 6, 7, 0]], [3], [[1, 2, 0]], [2], [[0, 0]], [0], [[0, 0, 0]], [0])
    #        spk  ptext  text         SOS seg (left-padded)  target + EOS
    np.testing.assert_array_equal(lay["text_ids"][0], [0, 0, 0, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(lay["audio_ids"][0], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, SOS, 1, 2, EOS, 0])
    np.testing.assert_array_equal(lay["kind"][0], [1, 0, 0, 2, 2, 2, 0, 0, 0, 0, 3, 4, 4, 4, 0])
    np.testing.assert_array_equal(lay["valid"][0], lay["kind"][0] > 0)
    np.testing.assert_array_equal(lay["positions"][0], [0, 0, 0, 1, 2, 3, 3, 3, 3, 3, 4, 5, 6, 7, 7])
    # SOS predicts the first token, the last token predicts EOS; nothing else is trained.
    np.testing.assert_array_equal(lay["labels"][0], [0] * 10 + [1, 2, EOS, 0, 0])
    np.testing.assert_array_equal(np.flatnonzero(lay["loss_mask"][0]), [10, 11, 12])


def test_one_shot_layout_by_hand_without_speaker():
    lay = _layout(*ONE_SHOT.values(), use_speaker=False)
    np.testing.assert_array_equal(lay["text_ids"], [
        [0, 8, 9, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 8, 0, 5, 6, 7, 9, 0, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(lay["audio_ids"], [
        [0, 0, 0, 0, 0, 0, 0, 0, SOS, 3, 4, 1, 2, 3, EOS],
        [0, 0, 0, 0, 0, 0, 0, SOS, 3, 4, 5, 9, EOS, 0, 0]])
    np.testing.assert_array_equal(lay["kind"], [
        [0, 2, 2, 2, 0, 0, 0, 0, 3, 3, 3, 4, 4, 4, 4],
        [0, 2, 0, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 0, 0]])
    np.testing.assert_array_equal(lay["positions"], [
        [0, 0, 1, 2, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9],
        [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10]])
    np.testing.assert_array_equal(lay["labels"], [
        [0] * 10 + [1, 2, 3, EOS, 0],
        [0] * 10 + [9, EOS, 0, 0, 0]])
    # The loss covers exactly the target tokens and EOS: never text, prompt tokens or padding.
    target = np.asarray(lay["kind"]) == 4
    np.testing.assert_array_equal(np.asarray(lay["loss_mask"])[:, :-1], target[:, 1:])
    assert not np.any(np.asarray(lay["loss_mask"]) & (np.asarray(lay["kind"]) == 2))


def test_prefix_is_the_layout_without_its_target():
    lay = _layout(*ONE_SHOT.values())
    a = {k: jnp.asarray(v, jnp.int32) for k, v in ONE_SHOT.items()}
    pre = build_prefix(a["text"], a["text_len"], a["ptext"], a["ptext_len"], a["ptok"], a["ptok_len"],
                       codebook_size=K)
    s0 = 1 + 2 + 4 + 1 + 3
    for k in ("text_ids", "audio_ids", "kind", "valid", "positions"):
        np.testing.assert_array_equal(pre[k], lay[k][:, :s0])
    np.testing.assert_array_equal(pre["text_len"], [1, 4])
    assert np.all(np.asarray(pre["valid"])[:, -1])  # generation continues right after a valid slot


# --- model ---------------------------------------------------------------------------------------

B, REF_T = 2, 3200


def build(cfg, seed=0):
    # An "rbg" key: XLA compiles its initializers several times faster than threefry's on CPU.
    return ARTransformer(cfg, SPEC, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))


def speaker_fn(model):
    graphdef, _ = nnx.split(model)
    return jax.jit(lambda state, audio, lens: nnx.merge(graphdef, state).speaker_embedding(audio, lens))


@pytest.fixture(scope="module")
def refs():
    lens = np.array([REF_T, 2400])
    audio = np.random.RandomState(1).randn(B, REF_T).astype(np.float32) * 0.3
    return jnp.asarray(np.where(np.arange(REF_T)[None] < lens[:, None], audio, 0.0)), jnp.asarray(lens)


@pytest.fixture(scope="module")
def learnable(refs):
    """(model, jitted forward, jitted speaker embedding, spk of `refs`)."""
    model = build(tiny_cfg())
    spk_of = speaker_fn(model)
    return model, forward_fn(model), spk_of, spk_of(nnx.state(model), *refs)


def test_changing_a_future_token_never_changes_an_earlier_logit(learnable):
    model, fwd, _, spk = learnable
    lay = _layout(*ONE_SHOT.values())
    params = nnx.state(model)
    base = fwd(params, lay, spk)
    assert base.shape == (B, 15, K + 2) and base.dtype == jnp.float32
    j = 12  # row 0: the second target token
    changed = fwd(params, dict(lay, audio_ids=lay["audio_ids"].at[0, j].set(7)), spk)
    np.testing.assert_allclose(changed[0, :j], base[0, :j], atol=1e-5)
    assert not np.allclose(changed[0, j:], base[0, j:], atol=1e-3)
    np.testing.assert_allclose(changed[1], base[1], atol=1e-5)  # other rows untouched


def test_padding_is_invisible(learnable):
    """The same packed sequence with more padding in every segment gives the same logits."""
    model, fwd, _, spk = learnable
    params = nnx.state(model)
    small = _layout(*ONE_SHOT.values())

    def pad(rows, width):
        return [r + [0] * (width - len(r)) for r in rows]

    big = _layout(pad(ONE_SHOT["text"], 7), ONE_SHOT["text_len"], pad(ONE_SHOT["tokens"], 5),
                  ONE_SHOT["tokens_len"], pad(ONE_SHOT["ptext"], 4), ONE_SHOT["ptext_len"],
                  pad(ONE_SHOT["ptok"], 6), ONE_SHOT["ptok_len"])
    a, b = np.asarray(fwd(params, small, spk)), np.asarray(fwd(params, big, spk))
    for row in range(B):
        va, vb = np.asarray(small["valid"][row]), np.asarray(big["valid"][row])
        np.testing.assert_array_equal(small["audio_ids"][row][va], big["audio_ids"][row][vb])
        np.testing.assert_array_equal(small["labels"][row][va], big["labels"][row][vb])
        np.testing.assert_allclose(a[row][va], b[row][vb], atol=1e-4)


def test_learnable_speaker_changes_output_and_trains_jointly(learnable, refs):
    model, fwd, spk_of, spk = learnable
    audio, lens = refs
    lay = _layout(*ONE_SHOT.values())
    params = nnx.state(model)
    swapped = spk_of(params, audio[::-1], lens[::-1])
    np.testing.assert_allclose(swapped[::-1], spk, atol=1e-5)  # a function of each row's reference
    assert not np.allclose(fwd(params, lay, spk), fwd(params, lay, swapped), atol=1e-3)

    graphdef, p, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        return jnp.sum(m(lay, m.speaker_embedding(audio, lens)) * lay["loss_mask"][..., None])

    enc = jax.tree.leaves(jax.jit(jax.grad(loss))(p)["speaker_encoder"])
    assert enc and all(np.all(np.isfinite(g)) for g in enc)
    assert sum(float(jnp.abs(g).sum()) for g in enc) > 0


def test_no_speaker_ignores_the_reference_and_fixed_has_no_learned_encoder(refs):
    audio, lens = refs
    lay = _layout(*ONE_SHOT.values(), use_speaker=False)
    none = build(tiny_cfg(speaker="none"))
    assert none.speaker_encoder is None and none.spk_proj is None
    np.testing.assert_array_equal(none.speaker_embedding(audio, lens), 0.0)
    spk_other = jnp.asarray(np.random.RandomState(3).randn(B, 32).astype(np.float32))
    fwd = forward_fn(none)
    # Even a non-zero vector cannot leak in: the spk slot is masked.
    np.testing.assert_allclose(fwd(nnx.state(none), lay, jnp.zeros((B, 32))),
                               fwd(nnx.state(none), lay, spk_other), atol=1e-5)

    fixed = build(tiny_cfg(speaker="fixed"))
    assert fixed.speaker_encoder is None
    spk_of = speaker_fn(fixed)
    v = spk_of(nnx.state(fixed), audio, lens)
    np.testing.assert_allclose(spk_of(nnx.state(fixed), audio[::-1], lens[::-1])[::-1], v, atol=1e-5)
    assert not np.allclose(v[0], v[1], atol=1e-3)
    # Frozen: no gradient reaches the reference statistics.
    g = jax.jit(jax.grad(lambda x: jnp.sum(fixed.speaker_embedding(x, lens))))(audio)
    np.testing.assert_array_equal(g, 0.0)


def test_speaker_encoder_ignores_padding():
    cfg = tiny_cfg()
    enc = SpeakerEncoder(cfg, SPEC, rngs=nnx.Rngs(jax.random.key(2, impl="rbg")))
    lens = np.array([REF_T, 2000])
    audio = np.random.RandomState(4).randn(2, REF_T).astype(np.float32) * 0.3
    audio = np.where(np.arange(REF_T)[None] < lens[:, None], audio, 0.0)
    graphdef, st = nnx.split(enc)
    f = jax.jit(lambda st, x, n: nnx.merge(graphdef, st)(x, n))
    v = f(st, audio, lens)
    assert v.shape == (2, cfg.spk_dim)
    more = f(st, np.pad(audio, ((0, 0), (0, 1600))), lens)             # more trailing padding
    np.testing.assert_allclose(more, v, atol=1e-4, rtol=1e-4)
    alone = f(st, audio[1:, :2000], lens[1:])                           # no padding at all
    np.testing.assert_allclose(alone[0], v[1], atol=1e-4, rtol=1e-4)
    assert not np.allclose(v[0], v[1], atol=1e-2)


def _stack_blocks(tree):
    """A pure dict of an unscanned model with its decoder blocks stacked on a leading axis."""
    blocks = tree["decoder"]["blocks"]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[blocks[i] for i in sorted(blocks)])
    return dict(tree, decoder=dict(tree["decoder"], blocks=stacked))


@pytest.fixture(scope="module")
def scanned(learnable):
    """A scan_layers + remat="full" model holding the learnable fixture's weights."""
    model = build(tiny_cfg(scan_layers=True, remat="full"))
    dst = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(dst, _stack_blocks(nnx.state(learnable[0], nnx.Param).to_pure_dict()))
    nnx.update(model, dst)
    return model


def test_scan_and_remat_do_not_change_values(learnable, scanned):
    model, fwd, _, spk = learnable
    lay = _layout(*ONE_SHOT.values())
    np.testing.assert_allclose(forward_fn(scanned)(nnx.state(scanned), lay, spk), fwd(nnx.state(model), lay, spk),
                               atol=1e-5)

    def grads(m):
        graphdef, p, rest = nnx.split(m, nnx.Param, ...)
        loss = lambda p: jnp.sum(jnp.square(nnx.merge(graphdef, p, rest)(lay, spk)) * lay["loss_mask"][..., None])
        rematted = "remat" in str(jax.make_jaxpr(loss)(p))
        assert rematted == (m.decoder.remat != "none")
        loss_value, g = jax.jit(jax.value_and_grad(loss))(p)
        return loss_value, nnx.State(g).to_pure_dict()

    dots = build(tiny_cfg(remat="dots"))  # same seed: same weights
    (l0, g0), (l1, g1), (l2, g2) = grads(model), grads(dots), grads(scanned)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    np.testing.assert_allclose(l2, l0, rtol=1e-5)
    for want, got in ((g0, g1), (_stack_blocks(g0), g2)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6), want, got)


def test_scanned_model_gives_the_same_numbers_on_an_8_device_mesh(learnable, scanned):
    model, fwd, _, spk = learnable
    lay = _layout(*ONE_SHOT.values())
    mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
    rules = sharding.DEFAULT_RULES
    state = nnx.state(scanned)
    sharded = jax.device_put(state, sharding.state_shardings(state, rules, mesh))
    assert not sharded["decoder"]["blocks"]["attn"]["wq"].get_value().sharding.is_fully_replicated
    with sharding.activation_rules(mesh, rules):
        out = forward_fn(scanned)(sharded, lay, spk)
    np.testing.assert_allclose(out, fwd(nnx.state(model), lay, spk), atol=1e-5)


def test_params_have_logical_names_and_shard_on_a_mesh():
    model = nnx.eval_shape(lambda: build(tiny_cfg(scan_layers=True)))  # names only: no values needed
    _, params, _ = nnx.split(model, nnx.Param, ...)
    leaves = jax.tree.leaves_with_path(params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    for path, var in leaves:
        names = sharding._variable_names(var)
        assert names is not None and len(names) == var.get_value().ndim, (path, names)
        if jax.tree_util.keystr(path).startswith("['decoder']['blocks']"):
            assert names[0] == "layers" and var.get_value().shape[0] == 2, (path, names)
    mesh = jax.make_mesh((2, 2, 2), sharding.MESH_AXES)
    shardings = sharding.state_shardings(params, sharding.DEFAULT_RULES, mesh)
    wq = shardings["decoder"]["blocks"]["attn"]["wq"].get_value()
    assert tuple(wq.spec) == (None, "fsdp", "tensor", None)  # layers, embed, heads, kv
    assert tuple(shardings["head"]["kernel"].get_value().spec) == ("fsdp", "tensor")  # embed, vocab


def test_flops_per_token_counts_every_matmul_weight_twice():
    cfg = tiny_cfg()
    p = nnx.state(nnx.eval_shape(lambda: build(cfg)), nnx.Param)
    matmul = sum(x.size for x in jax.tree.leaves(p["decoder"]["blocks"]) if x.ndim >= 2)
    matmul += p["head"]["kernel"].get_value().size
    assert flops_per_token(cfg, 0) == 2 * matmul
    assert flops_per_token(cfg, 10) - flops_per_token(cfg, 0) == 4 * 10 * cfg.d_model * cfg.num_layers


def one_shot_batch(refs) -> dict:
    """`ONE_SHOT` as a training batch, its references `refs`."""
    names = ("text_ids", "text_len", "tokens", "tokens_len", "prompt_text_ids", "prompt_text_len",
             "prompt_tokens", "prompt_tokens_len")
    batch = {k: jnp.asarray(v, jnp.int32) for k, v in zip(names, ONE_SHOT.values())}
    return dict(batch, ref_audio=refs[0], ref_len=refs[1])


def test_alignment_ctc_reads_the_target_text_from_the_target_slots(refs):
    """`text_ctc_weight`: the loss adds CTC from the target slots to the target text (its own head trains);
    evaluation's loss stays the token loss alone; weight 0 builds no head."""
    from speech_jax.train.tasks import ar as task
    model = build(tiny_cfg(text_ctc_weight=0.5, text_ctc_rate=2))
    model.one_shot_prob = 0.0
    batch = one_shot_batch(refs)
    graphdef, p, rest = nnx.split(model, nnx.Param, ...)

    def loss_of(p):
        return task.loss_fn(nnx.merge(graphdef, p, rest), batch, jax.random.key(0), jnp.int32(0))

    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_of, has_aux=True))(p)
    assert 0 < float(metrics["text_ctc_loss"]) < np.inf
    np.testing.assert_allclose(float(loss), float(metrics["token_loss"] + 0.5 * metrics["text_ctc_loss"]),
                               rtol=1e-5)
    assert float(jnp.abs(grads["text_ctc_head"]["kernel"].get_value()).max()) > 0
    evaluated = jax.jit(lambda p: task.eval_fn(nnx.merge(graphdef, p, rest), batch))(p)
    np.testing.assert_allclose(float(evaluated["loss"]), float(metrics["token_loss"]), rtol=1e-5)
    assert "text_ctc_head" not in nnx.state(build(tiny_cfg()), nnx.Param)


def test_guided_attention_trains_one_layer_on_the_target_text(refs, scanned):
    """`guided_attention_weight`: the loss adds the diagonal prior on layer 0's first two heads (only that
    layer's queries and keys get its gradient); evaluation reports it beside the token loss; a scanned,
    rematerialised model computes the same value."""
    from speech_jax.train.tasks import ar as task
    guided = dict(guided_attention_weight=0.5, guided_attention_layer=0, guided_attention_heads=2)
    model = build(tiny_cfg(**guided))
    model.one_shot_prob = 1.0
    batch = one_shot_batch(refs)

    def loss_of(m):
        graphdef, p, rest = nnx.split(m, nnx.Param, ...)
        return p, lambda p: task.loss_fn(nnx.merge(graphdef, p, rest), batch, jax.random.key(0), jnp.int32(0))

    p, f = loss_of(model)
    guided_only = lambda p: (f(p)[1]["guided_attention_loss"], f(p))  # noqa: E731
    (_, (loss, metrics)), grads = jax.jit(jax.value_and_grad(guided_only, has_aux=True))(p)
    grads = nnx.State(grads).to_pure_dict()
    assert 0 < float(metrics["guided_attention_loss"]) < 1
    np.testing.assert_allclose(float(loss), float(metrics["token_loss"] + 0.5 * metrics["guided_attention_loss"]),
                               rtol=1e-5)
    blocks = grads["decoder"]["blocks"]
    for name in ("wq", "wk"):
        assert float(jnp.abs(blocks[0]["attn"][name]).max()) > 0
        assert float(jnp.abs(blocks[1]["attn"][name]).max()) == 0
    assert float(jnp.abs(blocks[0]["attn"]["wv"]).max()) == 0 and float(jnp.abs(grads["head"]["kernel"]).max()) == 0

    scan = build(tiny_cfg(scan_layers=True, remat="full", **guided))
    nnx.update(scan, nnx.state(scanned, nnx.Param))
    scan.one_shot_prob = 1.0
    p, f = loss_of(scan)
    _, scan_metrics = jax.jit(f)(p)
    np.testing.assert_allclose(scan_metrics["guided_attention_loss"], metrics["guided_attention_loss"], rtol=1e-5)
    graphdef, state = nnx.split(model)
    evaluated = jax.jit(lambda s: task.eval_fn(nnx.merge(graphdef, s), batch))(state)
    assert 0 < float(evaluated["guided_attention_loss"]) < 1
    with pytest.raises(ValueError, match="guided_attention_layer=2 is not one of the 2 layers"):
        ARTransformer(tiny_cfg(guided_attention_weight=1.0, guided_attention_layer=2), SPEC, rngs=nnx.Rngs(0))


def test_packing_moves_each_row_s_valid_slots_to_its_end_in_order():
    lay = _layout(*ONE_SHOT.values())
    packed = jax.jit(pack_right, static_argnums=1)(lay, 12)
    for row in range(B):
        valid = np.asarray(lay["valid"][row])
        n = int(valid.sum())
        assert not np.asarray(packed["valid"][row][:-n]).any()
        for k in lay:
            np.testing.assert_array_equal(packed[k][row][-n:], np.asarray(lay[k][row])[valid], err_msg=k)


def test_a_packed_layout_trains_the_same_function_and_a_prompt_that_does_not_fit_trains_zero_shot(refs):
    """`pack_prompt_slots`: the same losses, aids and accuracies as the static layout (every valid slot
    computes what it did); with no room for the prompts, the one-shot rows train exactly as zero-shot ones."""
    from speech_jax.train.tasks import ar as task
    model = build(tiny_cfg(guided_attention_weight=0.5, guided_attention_layer=0, text_ctc_weight=0.5))
    batch = one_shot_batch(refs)
    graphdef, state = nnx.split(model)

    def metrics(pack_prompt_slots, one_shot_prob):
        def f(state):
            m = nnx.merge(graphdef, state)
            m.pack_prompt_slots, m.one_shot_prob = pack_prompt_slots, one_shot_prob
            return task.loss_fn(m, batch, jax.random.key(0), jnp.int32(0))[1], task.eval_fn(m, batch)
        return jax.jit(f)(state)

    names = ("token_loss", "token_accuracy", "guided_attention_loss", "text_ctc_loss", "one_shot_fraction")
    static, static_eval = metrics(-1, 1.0)
    packed, packed_eval = metrics(4, 1.0)  # both rows' prompts (4 slots each) fit: 14 slots, not 15
    assert float(static["one_shot_fraction"]) == 1.0
    for k in names:
        np.testing.assert_allclose(packed[k], static[k], rtol=1e-5, err_msg=k)
    for k in ("loss", "one_shot_loss", "guided_attention_loss"):
        np.testing.assert_allclose(packed_eval[k], static_eval[k], rtol=1e-5, err_msg=k)
    no_room, _ = metrics(0, 1.0)  # 10 slots: room for the zero-shot rows only
    zero_shot, _ = metrics(-1, 0.0)
    assert float(no_room["one_shot_fraction"]) == 0.0
    for k in names:
        np.testing.assert_allclose(no_room[k], zero_shot[k], rtol=1e-5, err_msg=k)
    assert not np.allclose(zero_shot["token_loss"], static["token_loss"], rtol=1e-3)  # the prompts mattered


def test_residual_dropout_acts_only_in_training_and_scanned_layers_draw_the_same_masks(learnable):
    model, _, _, spk = learnable
    lay = _layout(*ONE_SHOT.values())
    rows = np.asarray(lay["valid"])

    def hidden_fn(m):
        graphdef, _ = nnx.split(m)
        return jax.jit(lambda s, key: nnx.merge(graphdef, s).hidden(lay, spk, dropout_rng=key))

    dropped = build(tiny_cfg(dropout=0.3))  # same seed: the learnable fixture's weights (dropout has none)
    run = hidden_fn(dropped)
    state = nnx.state(dropped)
    clean = hidden_fn(model)(nnx.state(model), None)
    # No key (evaluation, decoding): nothing is dropped.
    np.testing.assert_allclose(run(state, None), clean, atol=1e-6)
    a, b = run(state, jax.random.key(1)), run(state, jax.random.key(2))
    assert np.abs(np.asarray(a - clean))[rows].mean() > 0.05
    assert np.abs(np.asarray(a - b))[rows].mean() > 0.05
    np.testing.assert_array_equal(run(state, jax.random.key(1)), a)
    # The rate is the layer's: its branches lose that share of their values, and keep their mean.
    y = jnp.ones((64, 512))
    kept = dropped.decoder.blocks[0]._drop(y, jax.random.key(3))
    assert abs(float(jnp.mean(kept == 0)) - 0.3) < 0.01
    assert abs(float(jnp.mean(kept)) - 1.0) < 0.02
    # Scanned (and rematerialised) layers draw layer i's masks from the same split as the unrolled ones.
    scanned = build(tiny_cfg(dropout=0.3, scan_layers=True, remat="full"))
    dst = nnx.state(scanned, nnx.Param)
    nnx.replace_by_pure_dict(dst, _stack_blocks(nnx.state(dropped, nnx.Param).to_pure_dict()))
    nnx.update(scanned, dst)
    np.testing.assert_allclose(hidden_fn(scanned)(nnx.state(scanned), jax.random.key(1)), a, atol=1e-5)
    with pytest.raises(ValueError, match="dropout"):
        build(tiny_cfg(dropout=1.0))


def test_token_noise_replaces_target_inputs_in_training_only(refs):
    """`token_noise`: about that share of the target tokens' inputs become random codes (never EOS, never a
    label, never the prompt's tokens); the training loss changes, evaluation's does not; rate 0 is the
    paper's teacher forcing exactly."""
    from speech_jax.train.tasks import ar as task
    rows, la = 64, 48
    tokens = np.random.RandomState(0).randint(0, K, (rows, la))
    lens = np.full(rows, la)
    lens[::2] = 30
    lay = _build_layout(tokens, lens, tokens, lens, tokens[:, :2], np.full(rows, 2), tokens[:, :3],
                        np.full(rows, 3), codebook_size=K)
    noisy = task.corrupt_targets(lay, 0.3, K, jax.random.key(0))
    changed = np.asarray(noisy["audio_ids"] != lay["audio_ids"])
    target = np.asarray((lay["kind"] == 4) & (lay["audio_ids"] < K))
    assert not changed[~target].any()
    # A drawn code equals the true one 1/K of the time: 0.3 · 15/16 of the inputs change.
    assert abs(changed[target].mean() - 0.3 * (K - 1) / K) < 0.02
    assert np.asarray(noisy["audio_ids"]).max() <= EOS
    for k in ("labels", "loss_mask", "kind", "valid", "positions", "text_ids"):
        np.testing.assert_array_equal(noisy[k], lay[k], err_msg=k)

    batch = one_shot_batch(refs)
    graphdef, state = nnx.split(build(tiny_cfg()))

    def losses(rate):
        def f(state):
            m = nnx.merge(graphdef, state)
            m.token_noise, m.one_shot_prob = rate, 1.0
            return task.loss_fn(m, batch, jax.random.key(0), jnp.int32(0))[0], task.eval_fn(m, batch)["loss"]
        return jax.jit(f)(state)

    clean, clean_eval = losses(0.0)
    noised, noised_eval = losses(0.9)
    assert abs(float(noised) - float(clean)) > 1e-3
    np.testing.assert_allclose(noised_eval, clean_eval, rtol=1e-6)
    with pytest.raises(ValueError, match="token_noise"):
        build(tiny_cfg(token_noise=1.0))
