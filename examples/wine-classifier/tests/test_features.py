import math

import pandas as pd
import pytest
from wine_classifier.features import DERIVED, add_features


@pytest.fixture
def wine():
    return pd.DataFrame(
        {
            "flavanoids": [3.0],
            "total_phenols": [2.0],
            "color_intensity": [5.0],
            "hue": [0.5],
            "od280_od315": [3.0],
        }
    )


def test_derived_values(wine):
    out = add_features(wine)
    assert math.isclose(out["flavanoid_ratio"][0], 1.5)
    assert math.isclose(out["color_per_hue"][0], 10.0)
    assert math.isclose(out["phenols_x_od"][0], 6.0)


def test_input_is_not_modified(wine):
    add_features(wine)
    assert not set(DERIVED) & set(wine.columns)
