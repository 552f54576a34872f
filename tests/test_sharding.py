"""Mesh construction, logical-axis mapping and the clear errors for meshes that do not fit."""
import jax
import ml_collections
import pytest

from speech_jax import sharding


def cfg(**kw):
    return ml_collections.ConfigDict(dict(data=kw.get("data", -1), fsdp=kw.get("fsdp", 1), tensor=kw.get("tensor", 1)))


def test_mesh_shape_fills_the_free_axis():
    assert sharding.mesh_shape(cfg(data=-1, fsdp=2, tensor=2), 8) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert sharding.mesh_shape(cfg(data=1, fsdp=-1), 8) == {"data": 1, "fsdp": 8, "tensor": 1}


@pytest.mark.parametrize("kw,n,msg", [
    (dict(data=3, fsdp=1), 8, "needs 3 devices"),
    (dict(data=-1, fsdp=3), 8, "do not divide"),
    (dict(data=-1, fsdp=-1), 8, "at most one"),
    (dict(data=0), 8, "positive"),
])
def test_mesh_that_does_not_fit_is_a_clear_error(kw, n, msg):
    with pytest.raises(sharding.MeshError, match=msg):
        sharding.mesh_shape(cfg(**kw), n)


def test_batch_not_divisible_by_mesh_is_a_clear_error():
    mesh = sharding.make_mesh(cfg(data=-1))
    div = sharding.batch_divisor(mesh)
    sharding.check_batch(div * 2, mesh)
    if div > 1:
        with pytest.raises(sharding.MeshError, match="not divisible"):
            sharding.check_batch(div * 2 + 1, mesh)


class FakeMesh:
    def __init__(self, shape):
        self.shape = shape


def test_logical_to_spec_mapping_rules():
    mesh = FakeMesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.DEFAULT_RULES
    spec = sharding.logical_to_spec(("embed", "mlp"), rules, mesh, (64, 128))
    assert tuple(spec) == ("fsdp", "tensor")
    # A dimension the mesh axis does not divide is replicated rather than failing.
    assert tuple(sharding.logical_to_spec(("embed", "vocab"), rules, mesh, (64, 257))) == ("fsdp", None)
    # Size-1 mesh axes are dropped; a mesh axis is used at most once per array.
    mesh1 = FakeMesh({"data": 4, "fsdp": 1, "tensor": 2})
    assert tuple(sharding.logical_to_spec(("batch", "embed"), rules, mesh1, (8, 64))) == ("data", None)
    assert tuple(sharding.logical_to_spec(("mlp", "heads"), rules, mesh, (8, 8))) == ("tensor", None)


def test_constrain_is_identity_outside_a_mesh_context():
    x = jax.numpy.ones((2, 3))
    assert sharding.constrain(x, ("batch", "embed")) is x


def test_distributed_launch_needs_a_complete_environment(monkeypatch):
    for var in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    sharding.maybe_initialize_distributed()  # one process: nothing to initialise
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(sharding.MeshError, match="JAX_PROCESS_ID"):
        sharding.maybe_initialize_distributed()
