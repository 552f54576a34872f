"""The serving bundle: what it holds, that it synthesises exactly what the in-memory model does, and
that damaged bundles are refused with a clear error."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file

from speech_jax.cli import main
from speech_jax.export import BundleError, load_bundle, read_manifest
from speech_jax.infer.backend import PROGRAMS, USES
from speech_jax.infer.synthesizer import Synthesizer

SR = 16000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "Hello there, how are you? I am fine."


def voice(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(150.0 + 20.0 * np.sin(2 * np.pi * 2.0 * t)) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 5)) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def stages(tiny_stages):
    return ["--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
            "--flow-matching", tiny_stages["flow_matching"]]


@pytest.fixture(scope="module")
def bundle(stages, tmp_path_factory):
    """Written by the CLI, as a user would."""
    out = str(tmp_path_factory.mktemp("export") / "bundle")
    assert main(["export", "--out", out, *stages]) == 0
    return out


@pytest.fixture(scope="module")
def in_memory(tiny_stages):
    return Synthesizer.from_workdirs(tokenizer=tiny_stages["tokenizer"], ar=tiny_stages["ar"],
                                     flow_matching=tiny_stages["flow_matching"])


@pytest.fixture(scope="module")
def served(bundle):
    return load_bundle(bundle)


@pytest.fixture(scope="module")
def ref_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ref") / "ref.wav")
    sf.write(path, voice(1.2), SR, subtype="FLOAT")
    return path


def test_manifest_lists_and_checksums_every_file(bundle, in_memory):
    manifest = read_manifest(bundle)
    assert manifest["format_version"] == 5 and manifest["sample_rate"] == SR
    assert manifest["score_units"] in manifest["files"]  # the tokenizer's text units, for best-of-n
    assert set(manifest["programs"]) == set(PROGRAMS)
    assert set(manifest["components"]) == {"tokenizer", "ar", "flow_matching"}
    spec = in_memory.spec
    assert manifest["buckets"] == dict(batch="b (any)", ref_samples=spec.ref_samples, text_len=spec.text_len,
                                       prompt_tokens=spec.prompt_tokens, max_new_tokens=spec.max_new_tokens,
                                       frames=spec.frames)
    on_disk = {os.path.relpath(os.path.join(r, n), bundle) for r, _, ns in os.walk(bundle) for n in ns}
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["programs"]["ar_generate"]["inputs"][0]["shape"] == ["b", spec.text_len]


def test_weights_are_the_trained_weights_and_program_arguments(bundle, in_memory):
    manifest = read_manifest(bundle)
    assert "dit.blocks.0.attn.wq" in load_file(os.path.join(bundle, "weights", "flow_matching.safetensors"))
    for name, component in manifest["components"].items():
        flat = load_file(os.path.join(bundle, component["weights"]))
        ours = in_memory.backend.weights[name]
        assert set(flat) == set(ours)
        for key, value in ours.items():
            np.testing.assert_array_equal(flat[key], np.asarray(value))
    # Weights are arguments of the exported programs, not constants baked into the StableHLO.
    for name, entry in manifest["programs"].items():
        with open(os.path.join(bundle, entry["file"]), "rb") as f:
            exported = jax.export.deserialize(bytearray(f.read()))
        n_weights = sum(manifest["components"][c]["tensors"] for c in USES[name])
        assert len(exported.in_avals) == n_weights + len(entry["inputs"])
        assert os.path.getsize(os.path.join(bundle, entry["file"])) < 1_000_000


def test_bundle_synthesis_equals_in_memory(served, in_memory, ref_file):
    # Two sentences: one batch of 2 (a batch size other than the references' 1).
    for kwargs in (dict(text=TEXT), dict(text=TEXT, prompt_text="This is my voice.")):
        a = in_memory.run(reference=ref_file, seed=3, **kwargs)
        b = served.run(reference=ref_file, seed=3, **kwargs)
        assert len(a.tokens) == len(b.tokens) == len(a.pieces)
        for ta, tb in zip(a.tokens, b.tokens):
            np.testing.assert_array_equal(ta, tb)
        assert a.prompt_tokens == b.prompt_tokens
        np.testing.assert_allclose(b.wav, a.wav, rtol=0, atol=1e-6)


def test_bundle_synthesises_a_voice_as_in_memory(served, in_memory):
    v = np.random.default_rng(0).normal(size=in_memory.spec.spk_dim).astype(np.float32)
    a, b = in_memory.run(TEXT, voice=v, seed=3), served.run(TEXT, voice=v, seed=3)
    for ta, tb in zip(a.tokens, b.tokens):
        np.testing.assert_array_equal(ta, tb)
    np.testing.assert_allclose(b.wav, a.wav, rtol=0, atol=1e-6)


def test_bundle_best_of_n_and_ctc_guidance_equal_in_memory(served, in_memory, ref_file):
    for kwargs in (dict(candidates=2), dict(candidates=2, ctc_guidance=1.0)):
        a = in_memory.run("Hello.", ref_file, seed=3, **kwargs)
        b = served.run("Hello.", ref_file, seed=3, **kwargs)
        np.testing.assert_array_equal(a.tokens[0], b.tokens[0])
        np.testing.assert_allclose(b.wav, a.wav, rtol=0, atol=1e-6)


def test_bundle_of_an_earlier_version_loads_without_voices(bundle, ref_file, tmp_path):
    """Format 2 had neither the voice nor the score_text program: such a bundle still synthesises from
    references, and says why it cannot take a voice or pick the best of several samples."""
    copy = _copy(bundle, tmp_path)
    with open(os.path.join(copy, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["format_version"] = 2
    for name in ("voice", "score_text", "ar_generate_guided"):
        os.remove(os.path.join(copy, "programs", f"{name}.jax_export"))
        del manifest["programs"][name], manifest["files"][f"programs/{name}.jax_export"]
    os.remove(os.path.join(copy, manifest["score_units"]))
    del manifest["files"][manifest.pop("score_units")]
    with open(os.path.join(copy, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    old = load_bundle(copy)
    assert len(old.synthesize("Hello.", ref_file, seed=3)) > 0
    with pytest.raises(BundleError, match="no voice program .* export it again"):
        old.synthesize("Hello.", voice=np.zeros(old.spec.spk_dim, np.float32))
    with pytest.raises(ValueError, match="best-of-n .* export it again"):
        old.synthesize("Hello.", ref_file, candidates=2)


def test_bundle_serves_only_its_exported_settings(served, ref_file):
    with pytest.raises(BundleError, match="exported with top_k=25, not top_k=5"):
        served.synthesize("Hello.", ref_file, top_k=5)
    with pytest.raises(BundleError, match="fm_steps=10, not fm_steps=4"):
        served.synthesize("Hello.", ref_file, fm_steps=4)


def _copy(bundle, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(bundle, out)
    return out


def test_damaged_bundles_are_clear_errors(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    weights = os.path.join(copy, "weights", "ar.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(BundleError, match="weights/ar.safetensors is .* bytes.*truncated"):
        load_bundle(copy)

    copy = _copy(bundle, tmp_path / "b")
    program = os.path.join(copy, "programs", "ar_generate.jax_export")
    with open(program, "r+b") as f:
        f.seek(os.path.getsize(program) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="ar_generate.jax_export does not match its SHA-256"):
        load_bundle(copy)

    os.remove(os.path.join(copy, "bpe.model"))
    with pytest.raises(BundleError, match="missing file bpe.model"):
        load_bundle(copy)
    with open(os.path.join(copy, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["format_version"] = 99
    with open(os.path.join(copy, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    with pytest.raises(BundleError, match="version 99"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not a speech-jax bundle"):
        load_bundle(str(tmp_path))


def test_cli_synthesize_from_bundle(bundle, served, stages, ref_file, tmp_path, capsys):
    out = str(tmp_path / "hello.wav")
    rc = main(["synthesize", "--text", TEXT, "--reference", ref_file, "--out", out, "--bundle", bundle,
               "--seed", "3"])
    assert rc == 0
    wav, sr = sf.read(out, dtype="float32")
    assert sr == SR
    np.testing.assert_allclose(wav, served.synthesize(TEXT, ref_file, seed=3), rtol=0, atol=1e-4)
    rc = main(["synthesize", "--text", "Hi.", "--reference", ref_file, "--out", out, "--bundle", bundle, *stages])
    assert rc == 2 and "not both" in capsys.readouterr().err
    assert main(["export", "--out", bundle, *stages]) == 2
    assert "exists" in capsys.readouterr().err


def test_bundle_synthesises_without_the_model_code(bundle, ref_file, tmp_path):
    """A fresh process: load_bundle and synthesise, importing neither the models nor the training code."""
    out = str(tmp_path / "fresh.wav")
    code = (
        "import sys\n"
        "from speech_jax.export import load_bundle\n"
        "from speech_jax.audio.io import save_audio\n"
        f"s = load_bundle({bundle!r})\n"
        f"save_audio({out!r}, s.synthesize('Hello there.', {ref_file!r}, seed=3), s.sample_rate)\n"
        "bad = [m for m in sys.modules if m.startswith(('speech_jax.models', 'speech_jax.train', "
        "'speech_jax.layers', 'flax.nnx', 'orbax', 'data_pipelines'))]\n"
        "assert not bad, bad\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wav, sr = sf.read(out, dtype="float32")
    assert sr == SR and len(wav) > 0 and np.all(np.isfinite(wav))
