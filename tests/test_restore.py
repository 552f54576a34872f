"""Loading an earlier stage: its weights only (no optimizer state), straight onto the current mesh."""
import json
import os
import shutil

import jax
import ml_collections
import numpy as np

from speech_jax import sharding
from speech_jax.train.restore import load_stage
from test_train import flat, params_of, shared_full_run


def test_load_stage_reads_weights_only_onto_the_mesh(tiny_corpus, tmp_path_factory, tmp_path):
    trained, _ = shared_full_run(tiny_corpus, tmp_path_factory)
    workdir = str(tmp_path / "stage")
    shutil.copytree(trained, workdir)
    # An optimizer this code cannot build: restoring the optimizer state would need it.
    path = os.path.join(workdir, "checkpoints", "6", "config", "metadata")
    saved = json.load(open(path))
    saved["optim"]["name"] = "retired"
    json.dump(saved, open(path, "w"))

    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 4, "tensor": 2}))
    config, _, params, rest = load_stage(workdir, "tokenizer", mesh=mesh)
    assert config.optim.name == "retired"
    leaves = jax.tree.leaves((params, rest))
    assert all(x.sharding.mesh == mesh for x in leaves)
    assert any("fsdp" in str(x.sharding.spec) for x in leaves)  # sharded by the stage's rules, not replicated
    want = params_of(trained, tiny_corpus, 6)
    for x, y in zip(flat((params, rest)), flat((want.params, want.rest))):
        np.testing.assert_array_equal(x, y)
