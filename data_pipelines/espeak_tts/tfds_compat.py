"""Work-arounds for tensorflow_datasets 4.9.x, shared by this project's builders."""

from __future__ import annotations

import inspect

import tensorflow_datasets as tfds
from etils import epath


class LocalCodePath:
    """Mixin for a builder defined in a plain (non-zip) package.

    tfds 4.9.10's `DatasetBuilder.code_path` touches `importlib_resources`, which tfds only
    declares as a dependency on Python < 3.9, so building fails with ModuleNotFoundError on
    newer Pythons. The source file of the class is what tfds would compute anyway.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))
