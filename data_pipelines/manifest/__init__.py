"""User manifests as TFDS corpora. Importing this package registers the `manifest` builder."""

from data_pipelines.manifest.builder import REPORT_NAME, Manifest, ManifestConfig, make_config  # noqa: F401
from data_pipelines.manifest.rows import ManifestError, read_manifest  # noqa: F401
from data_pipelines.manifest.validate import BadFileError  # noqa: F401
