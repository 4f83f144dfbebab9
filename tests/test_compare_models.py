import json
import os
import pickle
import runpy
from pathlib import Path

import numpy as np
import pytest

from world_models.evaluation.compare import comparison_rows
from world_models.evaluation.safe_pickle import (
    ResultFileError,
    UnsafePickleError,
    load_mse_curve,
    safe_load_pickle,
    safe_loads,
)

ROOT = Path(__file__).resolve().parents[1]


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Arbitrary:
    def __init__(self):
        self.value = 3


def plain_result():
    return {
        "start_indices": [3, 7],
        "all_real_frames": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        "mse_per_horizon_pixels": [0.0, np.float64(1.5), 2.5],
        "sequence_length": 2,
        "nested": ({"a": np.float32(1)}, "text", b"bytes", None, True, 1j),
        "fortran": np.asfortranarray(np.ones((3, 2), np.float32)),
        "strings": np.array(["x", "yy"]),
    }


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_and_numpy_round_trip(protocol):
    original = plain_result()
    loaded = safe_loads(pickle.dumps(original, protocol=protocol))
    assert loaded.keys() == original.keys()
    np.testing.assert_array_equal(
        loaded["all_real_frames"], original["all_real_frames"]
    )
    assert loaded["all_real_frames"].dtype == np.uint8
    np.testing.assert_array_equal(loaded["fortran"], original["fortran"])
    assert loaded["mse_per_horizon_pixels"] == [0.0, 1.5, 2.5]
    assert loaded["nested"][0]["a"].dtype == np.float32
    assert list(loaded["strings"]) == ["x", "yy"]


def test_numpy1_module_names_are_accepted():
    data = pickle.dumps({"a": np.arange(4.0)}, protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in data
    old = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    np.testing.assert_array_equal(safe_loads(old)["a"], np.arange(4.0))


def test_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"mse_per_horizon_pixels": [RunsCode(marker)]}))
    with pytest.raises(UnsafePickleError, match=r"evil.pkl.*(posix|os)\.system"):
        safe_load_pickle(path)
    assert not marker.exists()


def test_arbitrary_class_is_refused(tmp_path):
    path = tmp_path / "object.pkl"
    path.write_bytes(pickle.dumps({"x": Arbitrary()}))
    with pytest.raises(UnsafePickleError, match="test_compare_models.Arbitrary"):
        safe_load_pickle(path)


def test_builtins_and_codecs_tricks_are_refused():
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_loads(b"cbuiltins\neval\n(V1+1\ntR.")
    with pytest.raises(UnsafePickleError, match="rot13|encoding"):
        safe_loads(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(UnsafePickleError, match="set"):
        safe_loads(pickle.dumps({1, 2}, protocol=4))


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ResultFileError, match="absent.pkl"):
        safe_load_pickle(tmp_path / "absent.pkl")
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(ResultFileError, match="corrupt.pkl"):
        safe_load_pickle(corrupt)
    no_curve = tmp_path / "nocurve.pkl"
    no_curve.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ResultFileError, match="nocurve.pkl.*mse_per_horizon_pixels"):
        load_mse_curve(no_curve)


def test_rows_cover_the_common_range_and_pick_the_better_model():
    rows = comparison_rows(
        ["a", "b"], [np.array([0.0, 2.0, 4.0, 8.0]), np.array([0.0, 1.0, 4.0])]
    )
    assert [row["horizon"] for row in rows] == [0, 1, 2]
    assert [row["better"] for row in rows] == ["tie", "b", "tie"]
    assert rows[1]["difference"]["b"] == -1.0 and rows[1]["ratio"]["b"] == 0.5
    assert np.isnan(rows[0]["ratio"]["b"])


def test_compare_script_writes_plots_table_and_json(tmp_path, capsys):
    for name, curve in (("a", [0.0, 10.0, 20.0, 30.0]), ("b", [0.0, 5.0, 25.0])):
        (tmp_path / f"{name}.pkl").write_bytes(
            pickle.dumps({"mse_per_horizon_pixels": curve, "sequence_length": 3})
        )
    main = runpy.run_path(str(ROOT / "scripts" / "compare_models.py"))["main"]
    out = tmp_path / "cmp"
    main(
        [
            str(tmp_path / "a.pkl"),
            str(tmp_path / "b.pkl"),
            "--labels",
            "ours",
            "theirs",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "| 1 | 10.00 | 5.00 | -5.00 | 0.500 | theirs |" in printed
    assert "| 2 | 20.00 | 25.00 | +5.00 | 1.250 | ours |" in printed
    assert "| 3 |" not in printed
    for name in ("model_comparison_plot.png", "model_comparison_ratio.png"):
        assert (out / name).stat().st_size > 5000
    summary = json.loads((out / "model_comparison.json").read_text())
    assert summary["labels"] == ["ours", "theirs"] and len(summary["rows"]) == 3
    assert (out / "model_comparison.md").read_text().count("\n| ") == 4
