"""The serving bundle: everything synthesis needs, without the training code or the Flax modules.

  BUNDLE/manifest.json                format version, spec (buckets and static settings), components,
                                      programs, and the size and SHA-256 of every other file
  BUNDLE/bpe.model | phonemes.json    the AR stage's text units (BPE model, or phoneme inventory)
  BUNDLE/scorer/<the same>            the tokenizer stage's text units (what its CTC head reads: best-of-n)
  BUNDLE/configs/<stage>.json         each stage's training config (for reference)
  BUNDLE/weights/<stage>.safetensors  each stage's variables, flat "a.b.c" keys (tokenizer, ar, flow_matching)
  BUNDLE/programs/<name>.jax_export   `jax.export` serialisations (StableHLO) of the eight backend programs
  BUNDLE/styles/<name>.safetensors    optional style adapters (LoRA factors "<ar weight key>.a" / ".b",
                                      their scale in the metadata), merged into the AR's weights at load

The programs are the very functions the in-memory `Synthesizer` jits (`speech_jax.infer.backend`), with
the weights as arguments (so the StableHLO holds code, not weights) and a symbolic batch dimension `b`;
every other dimension is a bucket of the spec. `load_bundle` checks every file against the manifest,
reads the safetensors, deserialises the programs and returns a `Synthesizer` over them: the same host
algorithm, the same numbers. It imports neither the models nor the training code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import jax
import numpy as np

from speech_jax.infer.backend import COMPONENTS, PROGRAMS, STATIC, USES, ProgramBackend, Spec, input_specs
from speech_jax.infer.synthesizer import Synthesizer
from speech_jax.text import units

FORMAT = "speech_jax.bundle"
# 2: the text units' file is named by "text_units" (1: "bpe", still read); 3: adds the `voice` program;
# 4: adds the `score_text` program and the tokenizer's text units ("score_units"); 5: adds `ar_generate_guided`
FORMAT_VERSION = 5
READ_VERSIONS = (1, 2, 3, 4, 5)
# Programs that bundles of earlier format versions lack: they load, and refuse only those programs.
ADDED_IN = {"voice": 3, "score_text": 4, "ar_generate_guided": 5}
NEEDED_FOR = {"voice": "use saved voices", "score_text": "synthesise the best of several candidates",
              "ar_generate_guided": "sample under CTC guidance"}
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle that cannot be used: missing, truncated or modified files, another format version."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dims(shape) -> list:
    return [d if isinstance(d, int) else str(d) for d in shape]


# --- writing --------------------------------------------------------------------------------------

def style_factors(style_workdir: str, ar_weights: dict) -> tuple[dict[str, np.ndarray], float]:
    """(LoRA factors by "<AR weight key>.a|.b", their scale) of a style stage, checked to adapt exactly the
    AR whose flat weights are `ar_weights`."""
    from speech_jax.infer.backend import Template
    from speech_jax.layers.lora import adapters, merge_adapters
    from speech_jax.train.restore import load_model
    _, model = load_model(style_workdir, "style")
    found = adapters(model.frozen)
    scales = {lora.scale for lora in found.values()}
    factors = {f"{k}.{f}": np.asarray(jax.device_get(getattr(lora, f)[...])) for k, lora in found.items() for f in "ab"}
    for lora in found.values():  # the base weights alone, to compare with the bundle's AR
        lora.b[...] = jax.numpy.zeros_like(lora.b[...])
    _, base = Template.split(merge_adapters(model.frozen))
    same = set(base) == set(ar_weights) and all(
        np.array_equal(np.asarray(jax.device_get(base[k])), np.asarray(jax.device_get(ar_weights[k]))) for k in base)
    if not same or len(scales) != 1:
        raise BundleError(f"the style stage in {style_workdir!r} adapts another AR than the bundle's")
    return factors, scales.pop()


def export_bundle(out: str, *, tokenizer: str, ar: str, flow_matching: str, max_new_tokens: int | None = None,
                  top_k: int = 25, fm_steps: int = 10, platforms: tuple[str, ...] | None = None,
                  styles: dict[str, str] | None = None) -> str:
    """Writes a bundle of the three trained stages (workdirs) to `out` (must not exist, or be empty).

    top_k and fm_steps are compiled into the programs (a bundle serves only those); platforms: the
    `jax.export` lowering platforms (default: this machine's backend); styles: name -> a style stage's
    workdir trained on this AR, each saved as its adapters only. Returns `out`."""
    from safetensors.numpy import save_file

    from speech_jax.infer.backend import make_programs
    from speech_jax.infer.synthesizer import load_stages

    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise BundleError(f"{out!r} exists and is not an empty directory: choose a new output path")
    templates, weights, spec, text_units, configs = load_stages(tokenizer, ar, flow_matching, max_new_tokens)
    spec = spec.replace(top_k=int(top_k), fm_steps=int(fm_steps))
    programs = make_programs(templates, spec)
    batch, = jax.export.symbolic_shape("b")
    arrays = input_specs(spec, batch)

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".bundle-", dir=parent)  # renamed into place when complete
    try:
        for sub in ("configs", "weights", "programs", "styles"):
            os.makedirs(os.path.join(tmp, sub))
        style_files = {}
        for name, workdir in (styles or {}).items():
            factors, scale = style_factors(workdir, weights["ar"])
            style_files[name] = f"styles/{name}.safetensors"
            save_file(factors, os.path.join(tmp, style_files[name]), metadata={"format": FORMAT, "scale": repr(scale)})
        units_file = text_units.save(tmp)
        os.makedirs(os.path.join(tmp, "scorer"))
        score_units_file = "scorer/" + units.from_config(configs["tokenizer"].data).save(os.path.join(tmp, "scorer"))
        components = {}
        for name in COMPONENTS:
            flat = {k: np.asarray(jax.device_get(v)) for k, v in weights[name].items()}
            save_file(flat, os.path.join(tmp, "weights", f"{name}.safetensors"), metadata={"format": FORMAT})
            with open(os.path.join(tmp, "configs", f"{name}.json"), "w") as f:
                f.write(configs[name].to_json_best_effort(indent=2))
            components[name] = dict(weights=f"weights/{name}.safetensors", config=f"configs/{name}.json",
                                    tensors=len(flat), parameters=int(sum(v.size for v in flat.values())))
        entries = {}
        for name in PROGRAMS:
            weight_specs = [{k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights[c].items()}
                            for c in USES[name]]
            exported = jax.export.export(jax.jit(programs[name]), platforms=platforms)(
                *weight_specs, *arrays[name])
            path = f"programs/{name}.jax_export"
            with open(os.path.join(tmp, path), "wb") as f:
                f.write(exported.serialize())
            entries[name] = dict(file=path, uses=list(USES[name]), platforms=list(exported.platforms),
                                 inputs=[dict(shape=_dims(a.shape), dtype=str(a.dtype)) for a in arrays[name]],
                                 outputs=[dict(shape=_dims(a.shape), dtype=str(a.dtype)) for a in exported.out_avals])
        files = {}
        for root, _, names in os.walk(tmp):
            for n in names:
                full = os.path.join(root, n)
                files[os.path.relpath(full, tmp)] = dict(bytes=os.path.getsize(full), sha256=_sha256(full))
        manifest = dict(format=FORMAT, format_version=FORMAT_VERSION, jax_version=jax.__version__,
                        sample_rate=spec.sample_rate, spec=spec.to_dict(),
                        buckets=dict(batch="b (any)", ref_samples=spec.ref_samples, text_len=spec.text_len,
                                     prompt_tokens=spec.prompt_tokens, max_new_tokens=spec.max_new_tokens,
                                     frames=spec.frames),
                        text_units=units_file, score_units=score_units_file, components=components,
                        programs=entries, styles=style_files,
                        files=dict(sorted(files.items())))
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
        if os.path.isdir(out):
            os.rmdir(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --- reading --------------------------------------------------------------------------------------

def read_manifest(path: str) -> dict:
    """The manifest of the bundle at `path`, after checking every file's size and SHA-256 against it."""
    file = os.path.join(path, MANIFEST)
    if not os.path.isfile(file):
        raise BundleError(f"{path!r} is not a speech-jax bundle: no {MANIFEST} (write one with speech-jax export)")
    try:
        with open(file) as f:
            manifest = json.load(f)
        version = (manifest.get("format"), manifest.get("format_version"))
        if version[0] != FORMAT or version[1] not in READ_VERSIONS:
            raise BundleError(f"{file}: format {version[0]!r} version {version[1]!r}; this code reads "
                              f"{FORMAT!r} versions {READ_VERSIONS}")
        files = manifest["files"]
        needed = [manifest.get("text_units") or manifest["bpe"]] + [c[k] for c in manifest["components"].values() for k in ("weights", "config")]
        needed += [manifest["score_units"]] if "score_units" in manifest else []
        needed += [p["file"] for p in manifest["programs"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, BundleError):
            raise
        raise BundleError(f"{file}: unreadable manifest ({type(e).__name__}: {e})") from e
    for rel in needed:
        if rel not in files:
            raise BundleError(f"{file}: {rel} is used but has no checksum in the manifest")
    for rel, meta in files.items():
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            raise BundleError(f"bundle {path!r}: missing file {rel}")
        size = os.path.getsize(full)
        if size != meta["bytes"]:
            raise BundleError(f"bundle {path!r}: {rel} is {size} bytes, the manifest says {meta['bytes']}: "
                              "truncated or replaced")
        if _sha256(full) != meta["sha256"]:
            raise BundleError(f"bundle {path!r}: {rel} does not match its SHA-256 in the manifest: modified or corrupt")
    return manifest


# Deserialised programs by content hash: loading the same bundle again reuses their compilations.
_CALLS: dict[str, object] = {}


def _program(path: str, entry: dict, sha256: str):
    if sha256 not in _CALLS:
        with open(os.path.join(path, entry["file"]), "rb") as f:
            data = f.read()
        try:
            exported = jax.export.deserialize(bytearray(data))
        except Exception as e:  # a flatbuffer that hashes right but does not parse: another jax
            raise BundleError(f"bundle {path!r}: cannot deserialise {entry['file']} ({e})") from e
        _CALLS[sha256] = jax.jit(exported.call)
    return _CALLS[sha256]


class _BundlePrograms:
    """The bundle's provider: its deserialised programs, for the spec they were exported with only."""

    def __init__(self, path: str, manifest: dict, spec: Spec):
        self.spec = spec
        self.calls = {name: _program(path, entry, manifest["files"][entry["file"]]["sha256"])
                      for name, entry in manifest["programs"].items()}

    def __call__(self, name: str, spec: Spec):
        if name not in self.calls:
            raise BundleError(f"this bundle has no {name} program (exported by an earlier version): export "
                              f"it again to {NEEDED_FOR.get(name, 'use it')}")
        settings = {f for fields in STATIC.values() for f in fields}
        differ = {f.name: getattr(spec, f.name) for f in dataclasses.fields(Spec)
                  if getattr(spec, f.name) != getattr(self.spec, f.name)}
        # Shapes, and the static settings this program reads, must be the exported ones.
        asked = {f: v for f, v in differ.items() if f in STATIC.get(name, ()) or f not in settings}
        if asked:
            have = ", ".join(f"{f}={getattr(self.spec, f)!r}" for f in asked)
            want = ", ".join(f"{f}={v!r}" for f, v in asked.items())
            raise BundleError(f"this bundle's {name} was exported with {have}, not {want}: export again with "
                              "those settings, or synthesise from the workdirs")
        return self.calls[name]


def _apply_style(path: str, manifest: dict, style: str, ar: dict) -> dict:
    """The AR's flat weights with style `style`'s adapters merged in: W + scale · (A·B), shaped like W."""
    from safetensors import safe_open
    styles = manifest.get("styles", {})
    if style not in styles:
        raise BundleError(f"bundle {path!r} has no style {style!r}; it has {sorted(styles) or 'none'}")
    with safe_open(os.path.join(path, styles[style]), framework="numpy") as f:
        scale = float(f.metadata()["scale"])
        factors = {k: f.get_tensor(k) for k in f.keys()}
    ar = dict(ar)
    for key in {k.rsplit(".", 1)[0] for k in factors}:
        w = ar[key]
        delta = scale * np.matmul(factors[f"{key}.a"], factors[f"{key}.b"])
        ar[key] = jax.device_put((np.asarray(w) + delta.reshape(w.shape)).astype(w.dtype))
    return ar


def load_bundle(path: str, *, style: str | None = None, **kwargs) -> Synthesizer:
    """A `Synthesizer` over the bundle at `path` (kwargs: Synthesizer options, e.g. max_batch); `style`:
    one of the bundle's styles, merged into the AR's weights.

    Raises BundleError for a missing, truncated or modified file, or a bundle for another platform."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    manifest = read_manifest(path)
    version = manifest["format_version"]
    programs = [p for p in PROGRAMS if ADDED_IN.get(p, 0) <= version]
    for kind, have, want in (("program", manifest["programs"], programs),
                             ("component", manifest["components"], COMPONENTS)):
        if set(have) != set(want):
            raise BundleError(f"bundle {path!r}: {kind}s {sorted(have)}, this code needs {sorted(want)}")
    backend = jax.default_backend()
    names = {"gpu": {"cuda", "rocm"}}.get(backend, {backend})  # jax.export's names for this backend
    for name, entry in manifest["programs"].items():
        if not names & set(entry["platforms"]):
            raise BundleError(f"bundle {path!r}: {name} was exported for {entry['platforms']}, "
                              f"this process runs on {backend!r}")
    try:
        spec = Spec(**manifest["spec"])
    except TypeError as e:
        raise BundleError(f"bundle {path!r}: the manifest's spec does not fit this code ({e})") from e
    weights = {}
    for name, component in manifest["components"].items():
        file = os.path.join(path, component["weights"])
        try:
            flat = load_file(file)
        except (SafetensorError, OSError, ValueError) as e:
            raise BundleError(f"bundle {path!r}: cannot read {component['weights']} ({e})") from e
        weights[name] = {k: jax.device_put(v) for k, v in flat.items()}
    if style:
        weights["ar"] = _apply_style(path, manifest, style, weights["ar"])
    text_units = units.load(os.path.join(path, manifest.get("text_units") or manifest["bpe"]))
    score_units = units.load(os.path.join(path, manifest["score_units"])) if "score_units" in manifest else None
    return Synthesizer(ProgramBackend(spec, weights, _BundlePrograms(path, manifest, spec)), text_units,
                       score_units=score_units, **kwargs)
