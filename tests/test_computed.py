"""`replication.computed`: an exact computation's result kept beside the run records, computed once per key."""

import json

from replication.computed import computed


def test_a_result_is_computed_once_per_key_and_again_when_the_key_or_the_file_changes(tmp_path):
    path, calls = tmp_path / "exp" / "exact.json", []

    def compute():
        calls.append(1)
        return {"steps": [1.5, float("nan")], "n": len(calls)}

    first = computed(path, {"settings": {"a": 2.0, "grid": (1, 2)}}, compute)
    assert first["n"] == 1 and first["steps"][0] == 1.5 and first["steps"][1] != first["steps"][1]  # NaN survives
    assert computed(path, {"settings": {"a": 2.0, "grid": [1, 2]}}, compute)["n"] == 1  # the same key as it reads back
    assert computed(path, {"settings": {"a": 3.0, "grid": [1, 2]}}, compute)["n"] == 2  # a changed setting
    path.write_text(path.read_text()[:20])  # a truncated file
    assert computed(path, {"settings": {"a": 3.0, "grid": [1, 2]}}, compute)["n"] == 3
    assert json.loads(path.read_text())["key"]["format"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["exact.json"]  # no temporary files left
