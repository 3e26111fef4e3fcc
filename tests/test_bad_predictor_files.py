"""Bad tables, damaged predictor files and damaged export manifests: one clear line, exit 2, nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from nas import packing
from nas.cli import main
from nas.errors import NasError

HEADER = ["op", "width", "bits", "lat"]


def write_rows(path: Path, rows: list[list[object]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def table_rows(n: int, seed: int = 0) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        op, width, bits = str(rng.choice(["conv", "dense"])), int(rng.choice([16, 32, 64])), int(rng.choice([4, 8]))
        rows.append([op, width, bits, f"{width * bits / 10 * (2 if op == 'conv' else 1):.4f}"])
    return rows


def strict_json(text: str) -> object:
    """Parse as strict JSON: NaN / Infinity are not JSON."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in printed JSON")
    return json.loads(text, parse_constant=refuse)


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    assert captured.out == ""
    return err


@pytest.fixture
def fitted(tmp_path: Path, capsys) -> Path:
    """A ridge predictor of 'lat' fitted on a small table."""
    out = tmp_path / "p.json"
    table = write_rows(tmp_path / "train.csv", table_rows(12))
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


# 1. too few rows ------------------------------------------------------------------------------
@pytest.mark.parametrize("rows, kind, expect", [
    (1, "ridge", "1 data row(s); a fit needs at least 2"),
    (2, "auto", "2 data row(s); 5-fold cross-validation of --kind auto needs at least 3"),
    (0, "ridge", "needs a header and at least one row"),  # a header plus blank lines
])
def test_too_few_rows_is_refused_with_the_minimum(tmp_path: Path, capsys, rows: int, kind: str, expect: str) -> None:
    table = write_rows(tmp_path / "t.csv", table_rows(rows))
    if rows == 0:
        with open(table, "a") as f:
            f.write("\n\n")
    out = tmp_path / "p.json"
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", kind, "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert str(table) in err and expect in err
    assert not out.exists()


def test_two_rows_fit_an_explicit_kind_and_print_null_for_undefined_statistics(tmp_path: Path, capsys) -> None:
    table = write_rows(tmp_path / "t.csv", table_rows(2))
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "ridge",
                 "--out", str(tmp_path / "p.json")]) == 0
    result = strict_json(capsys.readouterr().out)
    assert result["rows"] == 2


# 2. damaged meta.encoding ---------------------------------------------------------------------
def _no_levels(enc: list) -> list:
    enc[0].pop("levels")
    return enc


def _no_column(enc: list) -> list:
    enc[1].pop("column")
    return enc


def _int_levels(enc: list) -> list:
    enc[0]["levels"] = 5
    return enc


def _bad_type(enc: list) -> list:
    enc[0]["type"] = "weird"
    return enc


@pytest.mark.parametrize("damage, expect", [
    (lambda enc: "abc", "non-empty list"),
    (lambda enc: [], "non-empty list"),
    (_no_levels, "'op' needs 'levels'"),
    (_no_column, "entry 1 has no 'column'"),
    (_int_levels, "'op' needs 'levels'"),
    (_bad_type, "type 'weird'"),
])
def test_damaged_encoding_is_a_predictor_file_error(fitted: Path, tmp_path: Path, capsys, damage, expect) -> None:
    data = json.loads(fitted.read_text())
    assert data["meta"]["encoding"][0]["type"] == "categorical"
    data["meta"]["encoding"] = damage(data["meta"]["encoding"])
    del data["sha256"]  # as a person editing it would, so the encoding's own checks run
    fitted.write_text(json.dumps(data))
    test = write_rows(tmp_path / "test.csv", table_rows(6, seed=1))
    assert main(["predictors", "eval", str(fitted), str(test), "--target", "lat"]) == 2
    err = one_line_error(capsys)
    assert str(fitted) in err and "meta.encoding" in err and expect in err


@pytest.mark.parametrize("keep_digest", [True, False])
def test_a_nan_written_into_a_predictor_file_is_one_line(fitted: Path, tmp_path: Path, capsys,
                                                         keep_digest: bool) -> None:
    data = json.loads(fitted.read_text())
    if not keep_digest:
        del data["sha256"]
    data["meta"]["edited"] = float("nan")  # json.dumps writes NaN, as an editor or another tool might
    fitted.write_text(json.dumps(data))
    test = write_rows(tmp_path / "test.csv", table_rows(6, seed=1))
    assert main(["predictors", "eval", str(fitted), str(test), "--target", "lat"]) == 2
    err = one_line_error(capsys)
    assert str(fitted) in err and "holds NaN" in err


@pytest.mark.parametrize("edit, expect", [
    (lambda d: d["meta"].update(edited="@1e999"), "holds 1e999"),  # reads as inf: the digest then failed
    (lambda d: d["meta"].update(edited="@1" + "0" * 5000), "holds a number"),  # past int()'s digit limit
    (lambda d: d["model"]["params"].update(sigma=1e200), "sigma"),  # squared at predict time: overflow
    (lambda d: d["model"]["params"].update(sigma=-1.0), "sigma"),  # ridge read any float
])
def test_a_number_out_of_range_in_a_predictor_file_is_one_line(fitted: Path, tmp_path: Path, capsys, edit,
                                                               expect: str) -> None:  # noqa: ANN001
    data = json.loads(fitted.read_text())
    del data["sha256"]  # as an editor might, to make the file load
    edit(data)
    # "@..." marks a number written as its digits (json.dumps cannot write 1e999 or a 5,000-digit int as one).
    text = json.dumps(data)
    text = text.replace('"@1e999"', "1e999").replace(f'"@1{"0" * 5000}"', "1" + "0" * 5000)
    fitted.write_text(text)
    test = write_rows(tmp_path / "test.csv", table_rows(6, seed=1))
    assert main(["predictors", "eval", str(fitted), str(test), "--target", "lat"]) == 2
    err = one_line_error(capsys)
    assert expect in err


def test_a_huge_integer_option_in_a_predictor_file_is_one_line(tmp_path: Path, capsys) -> None:
    fitted = tmp_path / "gbm.json"
    table = write_rows(tmp_path / "train.csv", table_rows(12))
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "gbm", "--out", str(fitted)]) == 0
    capsys.readouterr()
    data = json.loads(fitted.read_text())
    del data["sha256"]
    data["model"]["options"]["learning_rate"] = 10**400  # float() of it raised OverflowError, a traceback
    fitted.write_text(json.dumps(data))
    test = write_rows(tmp_path / "test.csv", table_rows(6, seed=1))
    assert main(["predictors", "eval", str(fitted), str(test), "--target", "lat"]) == 2
    assert "401 digits" in one_line_error(capsys)


# 3. duplicated header, non-finite number in a numeric feature ---------------------------------
def test_duplicated_header_column_is_refused(tmp_path: Path, capsys) -> None:
    rows = [[r[0], r[1], r[1], r[3]] for r in table_rows(8)]
    table = write_rows(tmp_path / "t.csv", rows, header=["op", "width", "width", "lat"])
    out = tmp_path / "p.json"
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 2
    assert "column 'width' appears twice in the header" in one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("cell", ["nan", "inf", ""])
def test_non_finite_cell_in_a_numeric_feature_is_an_error_not_a_category(tmp_path: Path, capsys, cell: str) -> None:
    rows = table_rows(8)
    rows[4][1] = cell
    table = write_rows(tmp_path / "t.csv", rows)
    out = tmp_path / "p.json"
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 2
    assert f"column 'width' line 6: {cell!r} is not a finite number" in one_line_error(capsys)
    assert not out.exists()


# 4. undefined statistics are null, an empty table is an error ---------------------------------
def test_constant_target_and_one_row_eval_print_valid_json(tmp_path: Path, capsys) -> None:
    table = write_rows(tmp_path / "const.csv", [["conv", 16 * (i + 1), 4, "1.0"] for i in range(6)])
    out = tmp_path / "p.json"
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 0
    fitted = strict_json(capsys.readouterr().out)
    assert fitted["train"]["kendall_tau"] is None and fitted["train"]["spearman"] is None
    one = write_rows(tmp_path / "one.csv", [["conv", 32, 4, "1.0"]])
    assert main(["predictors", "eval", str(out), str(one), "--target", "lat"]) == 0
    score = strict_json(capsys.readouterr().out)
    assert score["n"] == 1 and score["kendall_tau"] is None


def test_eval_on_a_table_without_rows_is_refused(fitted: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(HEADER) + "\n\n\n")
    assert main(["predictors", "eval", str(fitted), str(empty), "--target", "lat"]) == 2
    assert f"{empty}: needs a header and at least one row" in one_line_error(capsys)


# 5. --out checked before fitting --------------------------------------------------------------
@pytest.mark.parametrize("where, expect", [("dir", "is a folder"), ("under_file", "is not a folder"),
                                           ("deep_under_file", "is not a folder"),
                                           ("under_proc", "cannot create anything in /proc")])
def test_unwritable_out_is_refused_before_fitting(tmp_path: Path, capsys, monkeypatch, where: str,
                                                  expect: str) -> None:
    import predictors

    def no_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("fitted before checking --out")

    monkeypatch.setattr(predictors, "make", no_fit)
    table = write_rows(tmp_path / "t.csv", table_rows(8))
    out = {"dir": tmp_path, "under_file": table / "p.json", "deep_under_file": table / "a" / "b" / "p.json",
           "under_proc": Path("/proc/nas-test/p.json")}[where]
    assert main(["predictors", "fit", str(table), "--target", "lat", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert f"--out {out}" in err and expect in err


# 6. load_exported with a damaged manifest -----------------------------------------------------
@pytest.fixture
def packed_member(tmp_path: Path) -> Path:
    """A two-layer (8-bit, float) packed member written straight with nas.packing: no run needed."""
    rng = np.random.default_rng(0)
    n_in, hidden, n_out = 6, 5, 3
    scale = rng.uniform(0.01, 0.1, hidden).astype(np.float32)
    k0 = rng.integers(-127, 128, (n_in, hidden)).astype(np.float32) * scale
    k0[0] = 127 * scale  # the largest code per channel fixes its scale
    tree = [packing.pack_layer(k0, np.zeros(hidden, np.float32), np.float32(3.0), 8),
            packing.pack_layer(rng.normal(size=(hidden, n_out)).astype(np.float32), np.zeros(n_out, np.float32),
                               np.float32(0.0), 32)]
    shapes = [{"in": n_in, "out": hidden, "bits": 8, "signed_input": True},
              {"in": hidden, "out": n_out, "bits": 32, "signed_input": False}]
    member = tmp_path / "member"
    member.mkdir()
    manifest = packing.make_manifest(shapes, np.zeros(n_in, np.float32), np.ones(n_in, np.float32))
    (member / packing.MANIFEST).write_text(json.dumps(manifest))
    packing.save_npz(member / packing.PARAMS_NPZ, tree)
    (member / "metrics.json").write_text(json.dumps({"measured": {}}))
    return member


def test_packed_member_loads(packed_member: Path) -> None:
    from nas import load_exported

    fn, _ = load_exported(packed_member)
    assert np.asarray(fn(np.ones((2, 6), np.float32))).shape == (2, 3)


def _set(*keys_value: object):  # noqa: ANN202 - a manifest edit
    *keys, value = keys_value

    def edit(m: dict) -> None:
        for k in keys[:-1]:
            m = m[k]
        m[keys[-1]] = value
    return edit


def _features(m: dict) -> None:
    m["input"].update(features=3, shift=[0, 0, 0], scale=[1, 1, 1])


@pytest.mark.parametrize("edit, expect", [
    (_set("layers", 0, "bits", "8"), "layers[0].bits must be one of"),
    (_set("layers", 0, "in", "x"), "layers[0].in must be an int"),
    (_set("layers", 1, "out", 2.5), "layers[1].out must be an int"),
    (_set("layers", 0, "relu_after", "no"), "layers[0].relu_after must be true or false"),
    (_set("input", "shift", "xxxxxx"), "input.shift must be a list of 6 finite numbers"),
    (_set("input", "scale", [0] * 6), "input.scale has a zero"),
    (_set("input", "scale", [1e-320] * 6), "input.scale has a zero (in float32)"),  # loaded, answered inf
    (_set("input", "shift", [1e300] * 6), "input.shift holds a value beyond float32's range"),
    (_features, "layers[0].in is 6 but input.features is 3"),
    (_set("layers", 1, "in", 4), "layers[1].in is 4 but layers[0].out is 5"),
    (_set("layers", []), "'layers' must be a non-empty list"),
    (_set("layers", 0, "x"), "layers[0] must be an object"),
])
def test_damaged_manifest_is_named_at_load(packed_member: Path, edit, expect: str) -> None:
    from nas import load_exported

    path = packed_member / packing.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(NasError) as info:
        load_exported(packed_member)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expect in message and "\n" not in message


def test_spreadsheet_csv_reads_and_errors_name_the_files_line(tmp_path: Path, capsys) -> None:
    table = write_rows(tmp_path / "t.csv", table_rows(8))
    bom = tmp_path / "bom.csv"  # Excel's "CSV UTF-8": a byte-order mark before the first column's name
    bom.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    out = tmp_path / "p.json"
    assert main(["predictors", "fit", str(bom), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 0
    capsys.readouterr()
    rows = table_rows(8)
    rows[4][3] = "1_6"  # float() reads 16; a typo, not a latency
    lines = table.read_text().splitlines()
    blank = tmp_path / "blank.csv"
    blank.write_text("\n".join([lines[0], "", ""] + [",".join(map(str, r)) for r in rows]) + "\n")
    assert main(["predictors", "fit", str(blank), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 2
    assert "column 'lat' line 8: '1_6' is not a finite number" in one_line_error(capsys)


def test_values_too_large_to_fit_and_json_nested_too_deep_are_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.json"
    for rows, column in ([[["conv", "1e200", 4, "1.0"], ["dense", "3e200", 8, "2.0"], ["conv", "2e200", 4, "3.0"]],
                          "width"], [[["conv", 16, 4, "-1e200"], ["dense", 32, 8, "2e200"], ["conv", 64, 4, "3e200"]],
                                     "lat"]):
        table = write_rows(tmp_path / "huge.csv", rows)
        # The standardiser's variance overflowed and the save raised a ValueError traceback before.
        assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 2
        assert f"column '{column}' line 2" in one_line_error(capsys) and not out.exists()
    # A numeric column named with "=" is named whole (it was cut at the "=", as a one-hot level's name is).
    rows = [["conv", "1e200", 4, "1.0"], ["dense", 3, 8, "2.0"], ["conv", 2, 4, "3.0"]]
    table = write_rows(tmp_path / "eq.csv", rows, header=["kind", "w=64", "bits", "lat"])
    assert main(["predictors", "fit", str(table), "--target", "lat", "--kind", "ridge", "--out", str(out)]) == 2
    assert "column 'w=64' line 2" in one_line_error(capsys) and not out.exists()
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    table = write_rows(tmp_path / "t.csv", table_rows(8))
    assert main(["predictors", "eval", str(deep), str(table), "--target", "lat"]) == 2
    assert "not valid JSON (RecursionError" in one_line_error(capsys)
