from wine_classifier.data import TARGET, load, load_raw
from wine_classifier.features import DERIVED


def test_load_has_the_expected_shape():
    frame = load()
    assert frame.shape == (178, 13 + len(DERIVED) + 1)
    assert frame.columns[-1] == TARGET


def test_three_cultivars_none_missing():
    frame = load()
    assert sorted(frame[TARGET].unique()) == [0, 1, 2]
    assert not frame.isna().any().any()


def test_column_names_are_payload_friendly():
    assert all("/" not in c for c in load_raw().columns)


def test_features_are_numeric():
    frame = load().drop(columns=[TARGET])
    assert all(dtype.kind == "f" for dtype in frame.dtypes)
