#!/usr/bin/env python3
"""Check that results.xlsx (written by `quba eval` / `quba report --xlsx`)
holds exactly the numbers of results.json: every cell, to 1e-12, and no
number of results.json left out. Exits non-zero, naming each mismatch.

    python scripts/check_xlsx.py RESULTS_XLSX RESULTS_JSON
"""
import json
import math
import sys

import openpyxl

TEXT = {"model": "name", "precision": "precision", "int8_format": "int8_format", "target": "target", "backend": "backend"}


def expected(model, column, dimensions):
    """The results.json value a column holds (None: absent or null)."""
    if column in TEXT:
        return model.get(TEXT[column])
    if column == "quba":
        return model.get("quba")
    if column in dimensions:
        return model["dimensions"].get(column)
    for end, i in (("_lo", 0), ("_hi", 1)):
        key = column[: -len(end)]
        if column.endswith(end) and key in dimensions:
            iv = model["intervals"].get(key)
            return None if iv is None else iv[i]
    return model["parts"].get(column)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    xlsx, results = sys.argv[1], sys.argv[2]
    with open(results) as f:
        models = json.load(f)["models"]
    sheet = openpyxl.load_workbook(xlsx, read_only=True, data_only=True).worksheets[0]
    rows = list(sheet.iter_rows(values_only=True))
    head, body = list(rows[0]), rows[1:]
    problems = []
    if len(body) != len(models):
        problems.append(f"{len(body)} rows, results.json has {len(models)} models")
    dimensions = set(models[0]["dimensions"]) if models else set()
    columns = set(head)
    numbers = 0
    for r, (row, model) in enumerate(zip(body, models), start=2):
        for column, got in zip(head, row):
            want = expected(model, column, dimensions)
            where = f"{xlsx} row {r} column {column!r}"
            if column in TEXT:
                if (got or None) != (want or None):
                    problems.append(f"{where}: {got!r}, results.json has {want!r}")
            elif want is None:
                if got is not None:
                    problems.append(f"{where}: {got!r}, results.json has no value")
            elif not isinstance(got, (int, float)) or isinstance(got, bool):
                problems.append(f"{where}: {got!r} is not a number (results.json: {want!r})")
            elif not math.isclose(got, want, rel_tol=0, abs_tol=1e-12):
                problems.append(f"{where}: {got!r}, results.json has {want!r}")
            else:
                numbers += 1
        # Every number of results.json the table is meant to carry has a column.
        carried = ["quba", *model["dimensions"], *model["parts"], *(f"{k}{e}" for k in model["intervals"] for e in ("_lo", "_hi"))]
        missing = [c for c in carried if c not in columns and expected(model, c, dimensions) is not None]
        if missing:
            problems.append(f"{xlsx}: no column for {', '.join(missing)} of {model['name']} {model['precision']}")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit(f"{xlsx}: {len(problems)} mismatch(es) with {results}")
    print(f"{xlsx}: {numbers} numbers in {len(body)} rows equal {results}")


if __name__ == "__main__":
    main()
