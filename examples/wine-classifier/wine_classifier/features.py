"""Derived features: ratios a sommelier's chemist would look at, not just raw measurements."""

from __future__ import annotations

import pandas as pd

DERIVED = ("flavanoid_ratio", "color_per_hue", "phenols_x_od")


def add_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` with the derived columns appended.

    - ``flavanoid_ratio``: flavanoids over total phenols, which separates cultivar 3 well;
    - ``color_per_hue``: colour intensity over hue, large for the deep red cultivar 3;
    - ``phenols_x_od``: total phenols times the OD280/OD315 protein ratio.
    """
    out = frame.copy()
    out["flavanoid_ratio"] = out["flavanoids"] / out["total_phenols"]
    out["color_per_hue"] = out["color_intensity"] / out["hue"]
    out["phenols_x_od"] = out["total_phenols"] * out["od280_od315"]
    return out
