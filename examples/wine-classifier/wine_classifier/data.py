"""The training data: scikit-learn's bundled UCI wine set (no download), cleaned up.

``load()`` is what ``taskyard.toml`` points at (``python:wine_classifier.data:load``): it
returns one frame with the feature columns and the ``target`` column (cultivar 0, 1 or 2).
"""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_wine

from wine_classifier.features import add_features

TARGET = "target"
# The raw name holds a '/', awkward in JSON payloads and column selectors.
RENAMES = {"od280/od315_of_diluted_wines": "od280_od315"}


def load_raw() -> pd.DataFrame:
    """The 178 wines exactly as scikit-learn ships them, with tidy column names."""
    return load_wine(as_frame=True).frame.rename(columns=RENAMES)


def load() -> pd.DataFrame:
    """Features (raw + derived) and the target, in a stable column order."""
    frame = add_features(load_raw())
    features = [c for c in frame.columns if c != TARGET]
    return frame[[*features, TARGET]]
