"""Serving bundle: safetensors weights, configs, the BPE model and jax.export StableHLO programs."""
from speech_jax.export.bundle import BundleError, export_bundle, load_bundle, read_manifest

__all__ = ["BundleError", "export_bundle", "load_bundle", "read_manifest"]
