"""Latent flow matching: ODE solvers, the OT-CFM loss, the DiT (CFG drop, adaLN-zero, padding, scan)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from speech_jax.infer import ode
from speech_jax.models import cfm
from speech_jax.models.flow_matching import FlowMatchingDiT, flops_per_frame
from speech_jax.sharding import DEFAULT_RULES, make_mesh, state_shardings

B, F, D, K, S = 2, 8, 4, 16, 8


def tiny_config(**overrides):
    c = ml_collections.ConfigDict(dict(
        latent_dim=D, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64, rope_theta=10000.0,
        attention_impl="einsum", dtype="float32", codebook_size=K, token_encoder_layers=1, spk_dim=S,
        scan_layers=False, remat="none"))
    c.update(overrides)
    return c


def build(pure=None, **overrides):
    """(graphdef, state) of a model with this config; the state from `pure` (a pure dict) if given.

    Only one model is ever initialised for real: the others are abstract (eval_shape) and filled
    from pure dicts, which keeps the file's compile time down."""
    make = lambda: FlowMatchingDiT(tiny_config(**overrides), rngs=nnx.Rngs(0))  # noqa: E731
    if pure is None:
        return nnx.split(make())
    graphdef, state = nnx.split(nnx.eval_shape(make))
    nnx.replace_by_pure_dict(state, pure)
    return graphdef, state


def randomized(pure, seed=0, scale=0.1):
    """Every parameter perturbed, so the zero-initialised gates and output hide no dependence."""
    rs = np.random.RandomState(seed)
    return jax.tree.map(lambda x: np.asarray(x) + scale * rs.randn(*x.shape).astype(np.float32), pure)


def stacked(pure):
    """A loop model's parameters in the scanned layout: blocks stacked on a leading layer axis."""
    pure = dict(pure)
    blocks = pure.pop("blocks")
    pure["blocks"] = jax.tree.map(lambda *xs: np.stack(xs), *[blocks[i] for i in sorted(blocks)])
    return pure


def make_inputs(seed, f=F, lengths=(F, 6), prompt_len=(2, 3)):
    rs = np.random.RandomState(seed)
    frame_mask = np.arange(f)[None] < np.asarray(lengths)[:, None]
    return dict(
        x_t=jnp.asarray(rs.randn(B, f, D), jnp.float32),
        t=jnp.asarray(rs.rand(B), jnp.float32),
        tokens=jnp.asarray(rs.randint(0, K, (B, f // 2)), jnp.int32),
        frame_mask=jnp.asarray(frame_mask),
        spk=jnp.asarray(rs.randn(B, S), jnp.float32),
        prompt=jnp.asarray(rs.randn(B, f, D), jnp.float32),
        prompt_mask=jnp.asarray(np.arange(f)[None] < np.asarray(prompt_len)[:, None]),
        drop=jnp.zeros((B,), bool))


ARGS = ("x_t", "t", "tokens", "frame_mask", "spk", "prompt", "prompt_mask", "drop")


@pytest.fixture(scope="module")
def dit():
    graphdef, init_state = build()
    init_pure = nnx.to_pure_dict(init_state)
    state = build(randomized(init_pure))[1]

    @jax.jit
    def forward(state, inputs):
        return nnx.merge(graphdef, state)(*(inputs[k] for k in ARGS))

    return dict(graphdef=graphdef, init_state=init_state, init_pure=init_pure, state=state, forward=forward)


# --- ODE solvers --------------------------------------------------------------------------------

def test_time_grids():
    for kind in ("uniform", "cosine", "sway"):
        g = np.asarray(ode.time_grid(10, kind))
        assert g.shape == (11,) and g[0] == 0.0 and abs(g[-1] - 1.0) < 1e-6 and np.all(np.diff(g) > 0), kind
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(ode.time_grid(10, "cosine"), 1 - np.cos(np.pi * t / 2), atol=1e-6)
    np.testing.assert_allclose(ode.time_grid(10, "sway", -1.0), 1 - np.cos(np.pi * t / 2), atol=1e-6)  # s = -1
    assert np.diff(ode.time_grid(10, "cosine"))[0] < 0.1  # smaller steps near the noise
    with pytest.raises(ValueError):
        ode.time_grid(4, "linear")


def test_euler_is_exact_for_a_constant_field():
    x0 = jnp.arange(6.0).reshape(1, 3, 2)
    a = jnp.asarray([[[0.5, -2.0]]])
    x1 = ode.solve(lambda x, t: jnp.broadcast_to(a, x.shape), x0, ode.time_grid(5, "cosine"))
    np.testing.assert_allclose(x1, x0 + a, atol=1e-6)


def test_midpoint_is_exact_for_a_field_linear_in_t():
    x0 = jnp.ones((2, 3, 1))
    b = 3.0
    field = lambda x, t: b * t[:, None, None] * jnp.ones_like(x)  # noqa: E731  x(1) = x0 + b/2
    grid = ode.time_grid(3, "cosine")
    np.testing.assert_allclose(ode.solve(field, x0, grid, method="midpoint"), x0 + b / 2, atol=1e-6)
    assert float(jnp.abs(ode.solve(field, x0, grid, method="euler") - (x0 + b / 2)).max()) > 1e-2


def test_solver_orders_on_exponential_growth():
    # dx/dt = x, x(0) = 1 -> e. Halving the step: Euler's error halves, midpoint's quarters.
    x0 = jnp.ones((1, 1, 1))
    err = {m: [abs(float(ode.solve(lambda x, t: x, x0, ode.time_grid(n), method=m)[0, 0, 0]) - np.e)
               for n in (8, 16, 32)] for m in ("euler", "midpoint")}
    for m, lo, hi in (("euler", 1.8, 2.2), ("midpoint", 3.6, 4.4)):
        ratios = [err[m][0] / err[m][1], err[m][1] / err[m][2]]
        assert all(lo < r < hi for r in ratios), (m, ratios)
    assert err["midpoint"][-1] < err["euler"][-1] / 10


def test_solver_holds_fixed_frames_and_cfg_formula():
    x0 = jax.random.normal(jax.random.key(0), (2, 5, 3))
    fixed = jax.random.normal(jax.random.key(1), (2, 5, 3))
    mask = jnp.asarray([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], bool)
    for method in ("euler", "midpoint"):
        x = ode.solve(lambda x, t: x * 0.5 + 1.0, x0, ode.time_grid(4), method=method, fixed=fixed, fixed_mask=mask)
        np.testing.assert_array_equal(np.asarray(x)[0, :2], np.asarray(fixed)[0, :2])
        free = ode.solve(lambda x, t: x * 0.5 + 1.0, x0, ode.time_grid(4), method=method)
        np.testing.assert_allclose(x[1], free[1], atol=1e-6)  # no fixed frames: untouched
    vc, vu = jnp.full((2,), 3.0), jnp.full((2,), 1.0)
    np.testing.assert_allclose(ode.cfg_velocity(vc, vu, 0.0), vc)
    np.testing.assert_allclose(ode.cfg_velocity(vc, vu, 0.5), 1.5 * 3.0 - 0.5 * 1.0)
    with pytest.raises(ValueError):
        ode.solve(lambda x, t: x, x0, ode.time_grid(2), method="rk4")


# --- OT-CFM objective ---------------------------------------------------------------------------

def test_path_and_target_velocity():
    x0, x1 = jax.random.normal(jax.random.key(0), (2, 2, 3, 4))
    t = jnp.asarray([0.3, 0.8])
    sigma = 1e-2
    np.testing.assert_allclose(cfm.interpolate(x0, x1, jnp.zeros(2), sigma), x0, atol=1e-6)
    np.testing.assert_allclose(cfm.interpolate(x0, x1, jnp.ones(2), sigma), x1 + sigma * x0, atol=1e-6)
    _, dxdt = jax.jvp(lambda s: cfm.interpolate(x0, x1, s, sigma), (t,), (jnp.ones(2),))
    np.testing.assert_allclose(dxdt, cfm.target_velocity(x0, x1, sigma), atol=1e-5)


def test_time_and_prompt_sampling():
    u = np.asarray(cfm.sample_time(jax.random.key(0), 4000))
    ln = np.asarray(cfm.sample_time(jax.random.key(1), 4000, "logit_normal"))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.03
    assert ln.min() > 0 and ln.max() < 1 and abs(ln.mean() - 0.5) < 0.03 and ln.std() < u.std()

    lengths = jnp.asarray(np.random.RandomState(0).randint(10, 100, 2000))
    m = np.asarray(cfm.sample_prompt(jax.random.key(2), lengths, 0.5, 0.3, 0.1, num_frames=100))
    n = m.sum(1)
    assert np.all(m[:, 1:] <= m[:, :-1])                              # a prefix
    assert abs((n > 0).mean() - 0.5) < 0.05                           # with probability prob
    used = n > 0
    assert np.all(n[used] <= np.floor(0.3 * np.asarray(lengths)[used]))
    assert np.all(n[used] >= np.floor(0.1 * np.asarray(lengths)[used]))
    assert not cfm.sample_prompt(jax.random.key(3), lengths, 0.0, num_frames=100).any()


def test_loss_counts_only_valid_non_prompt_frames():
    """d loss / d v_pred vanishes on prompt and padding frames and nowhere else; the prompt is x1."""
    inp = make_inputs(0)
    x1 = jax.random.normal(jax.random.key(5), (B, F, D))
    seen = {}

    def loss_of(v_pred):
        def stub(x_t, t, tokens, frame_mask, spk, prompt, prompt_mask, drop):
            seen.update(x_t=x_t, prompt=prompt, prompt_mask=prompt_mask, t=t)
            return v_pred
        return cfm.cfm_loss(stub, x1, inp["frame_mask"], inp["tokens"], inp["spk"], jax.random.key(7),
                            prompt_prob=1.0, prompt_min_frac=0.2)

    v0 = jax.random.normal(jax.random.key(6), (B, F, D))
    grad, metrics = jax.grad(lambda v: loss_of(v), has_aux=True)(v0)
    pm, fm = np.asarray(seen["prompt_mask"]), np.asarray(inp["frame_mask"])
    assert pm.any(1).all() and not (pm & ~fm).any()
    counted = fm & ~pm
    g = np.abs(np.asarray(grad)).sum(-1)
    assert np.all(g[~counted] == 0) and np.all(g[counted] > 0)
    np.testing.assert_allclose(cfm.loss_weights(inp["frame_mask"], seen["prompt_mask"]), counted)
    # Prompt frames: given as clean latent (input and state); elsewhere the prompt input is zero.
    np.testing.assert_array_equal(np.asarray(seen["prompt"])[pm], np.asarray(x1)[pm])
    np.testing.assert_array_equal(np.asarray(seen["prompt"])[~pm], 0)
    np.testing.assert_array_equal(np.asarray(seen["x_t"])[pm], np.asarray(x1)[pm])
    assert float(metrics["prompt_frac"]) == pytest.approx(pm.sum() / fm.sum())
    assert float(metrics["loss_frames"]) == counted.sum()


# --- the DiT ------------------------------------------------------------------------------------

def test_adaln_zero_init_predicts_zero_whatever_the_conditions(dit):
    a, b = make_inputs(0), make_inputs(1)
    va = dit["forward"](dit["init_state"], a)
    vb = dit["forward"](dit["init_state"], b)
    assert va.dtype == jnp.float32 and va.shape == (B, F, D)
    np.testing.assert_array_equal(va, 0.0)
    np.testing.assert_array_equal(vb, 0.0)
    assert float(jnp.abs(dit["forward"](dit["state"], a)).max()) > 1e-3   # trained-like params: not zero


def test_drop_removes_every_condition(dit):
    """Dropped example: same output whatever its tokens, speaker and prompt; kept example: changes."""
    a = make_inputs(0)
    a["drop"] = jnp.asarray([True, False])
    b = make_inputs(1)
    b.update(x_t=a["x_t"], t=a["t"], frame_mask=a["frame_mask"], drop=a["drop"])  # only conditions differ
    va, vb = dit["forward"](dit["state"], a), dit["forward"](dit["state"], b)
    np.testing.assert_allclose(va[0], vb[0], atol=1e-6)
    assert float(jnp.abs(va[1] - vb[1]).max()) > 1e-3
    for name in ("tokens", "spk", "prompt"):   # each condition matters when kept
        c = dict(a, drop=jnp.zeros((B,), bool))
        c2 = dict(c, **{name: b[name]})
        assert float(jnp.abs(dit["forward"](dit["state"], c) - dit["forward"](dit["state"], c2))[0].max()) > 1e-4


def test_padding_does_not_change_valid_frames(dit):
    short = make_inputs(0, f=6, lengths=(6, 4))
    long = make_inputs(1, f=F, lengths=(6, 4))   # different (garbage) values on the extra frames
    for k in ("x_t", "prompt"):
        long[k] = long[k].at[:, :6].set(short[k])
    long["tokens"] = long["tokens"].at[:, :3].set(short["tokens"])
    long.update(t=short["t"], spk=short["spk"], prompt_mask=jnp.pad(short["prompt_mask"], ((0, 0), (0, 2))))
    vs, vl = dit["forward"](dit["state"], short), dit["forward"](dit["state"], long)
    m = np.asarray(short["frame_mask"])
    np.testing.assert_allclose(np.asarray(vl)[:, :6][m], np.asarray(vs)[m], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(vl)[:, 6:], 0.0)   # padded frames: v = 0
    assert float(jnp.abs(vs).max()) > 1e-3


def test_scanned_stack_matches_the_loop_and_carries_layer_names(dit):
    loop = nnx.merge(dit["graphdef"], dit["state"])
    g, s = build(stacked(nnx.to_pure_dict(dit["state"])), scan_layers=True, remat="dots")
    for state, lead in ((dit["state"], None), (s, "layers")):
        for path, var in nnx.to_flat_state(state):
            assert isinstance(var, nnx.Param)
            names = var.get_metadata().get("out_sharding")
            assert names is not None and len(names) == np.ndim(var.get_value()), (path, names)
            if lead and path[0] == "blocks":
                assert names[0] == "layers", (path, names)
    mesh = make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
    state_shardings(s, DEFAULT_RULES, mesh)  # every name resolves on a 3-axis mesh
    assert loop.scan_layers is False

    inp = make_inputs(2)
    v_scan = jax.jit(lambda s, i: nnx.merge(g, s)(*(i[k] for k in ARGS)))(s, inp)
    np.testing.assert_allclose(v_scan, dit["forward"](dit["state"], inp), atol=1e-5)


def test_flops_per_frame():
    c = tiny_config()
    f2, f4 = flops_per_frame(c, 64), flops_per_frame(tiny_config(num_layers=4), 64)
    d, hd, h, kv, n = 32, 8, 4, 2, 64
    block = (2 * n * d * hd * (2 * h + 2 * kv) + 4 * n * n * d + 6 * n * d * 64 + 2 * d * 6 * d) / n
    assert f4 - f2 == pytest.approx(2 * block)
    assert f2 > 0 and flops_per_frame(c, 128) > f2  # attention grows with length


# --- sampling -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sampling(dit):
    graphdef = dit["graphdef"]
    inp = make_inputs(3)
    x0 = jax.random.normal(jax.random.key(11), (B, F, D))   # x0 = N(0, I) from a seed
    cond_args = tuple(inp[k] for k in ("tokens", "frame_mask", "spk", "prompt", "prompt_mask"))

    @jax.jit
    def batched(state, w):
        return ode.sample(nnx.merge(graphdef, state), x0, *cond_args, steps=4, method="midpoint",
                          grid_kind="cosine", cfg_weight=w)

    @jax.jit
    def separate(state, w):
        """Reference: conditional and unconditional passes as two calls, combined by the CFG rule."""
        m = nnx.merge(graphdef, state)

        def velocity(x, t):
            args = (inp["tokens"], inp["frame_mask"], inp["spk"], inp["prompt"], inp["prompt_mask"])
            v_c = m(x, t, *args, jnp.zeros((B,), bool))
            v_u = m(x, t, *args, jnp.ones((B,), bool))
            return ode.cfg_velocity(v_c, v_u, w)
        x = ode.solve(velocity, x0, ode.time_grid(4, "cosine"), method="midpoint",
                      fixed=inp["prompt"], fixed_mask=inp["prompt_mask"])
        return jnp.where(inp["frame_mask"][..., None], x, 0.0)

    return dict(inp=inp, batched=batched, separate=separate)


def test_cfg_weight_zero_is_the_conditional_solve(dit, sampling):
    s = dit["state"]
    out0 = sampling["batched"](s, 0.0)
    np.testing.assert_allclose(out0, sampling["separate"](s, 0.0), atol=1e-5)   # w = 0: v_cond only
    out7 = sampling["batched"](s, 0.7)
    np.testing.assert_allclose(out7, sampling["separate"](s, 0.7), atol=1e-5)
    assert float(jnp.abs(out7 - out0).max()) > 1e-3                              # guidance acts
    assert out0.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out7)))


def test_prompt_frames_come_out_unchanged(dit, sampling):
    inp = sampling["inp"]
    out = np.asarray(sampling["batched"](dit["state"], 0.7))
    pm, fm = np.asarray(inp["prompt_mask"]), np.asarray(inp["frame_mask"])
    np.testing.assert_array_equal(out[pm], np.asarray(inp["prompt"])[pm])
    np.testing.assert_array_equal(out[~fm], 0.0)
    assert np.abs(out[fm & ~pm]).max() > 0


# --- learning -----------------------------------------------------------------------------------

def test_loss_falls_on_a_fixed_batch(dit):
    """Scanned, rematerialised stack: 30 Adam steps on one batch (fixed noise, t, prompt and drops)."""
    graphdef, params = build(stacked(dit["init_pure"]), scan_layers=True, remat="dots")
    inp = make_inputs(4)
    table = jax.random.normal(jax.random.key(9), (K, D))
    x1 = jnp.repeat(table[inp["tokens"]], 2, axis=1) * inp["frame_mask"][..., None]  # latents follow tokens
    tx = optax.adam(1e-2)
    rng = jax.random.key(3)

    @jax.jit
    def step(params, opt_state):
        def loss_of(p):
            return cfm.cfm_loss(nnx.merge(graphdef, p), x1, inp["frame_mask"], inp["tokens"], inp["spk"], rng,
                                prompt_prob=0.5, drop_prob=0.2)
        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    losses = []
    for _ in range(30):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.1 * losses[0], losses
