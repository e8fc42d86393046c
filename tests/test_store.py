import json
import os
import stat

import pytest

from replication import runner
from replication.store import CorruptRecordWarning, Store, checksum
from replication.runner import run_specs


@pytest.fixture
def stored(tmp_path, tiny_spec):
    store = Store(tmp_path, "smoke", "demo")
    [record] = run_specs([tiny_spec], store, workers=1, progress=False)
    return store, record


def test_round_trip_and_no_temp_files(stored):
    store, record = stored
    assert store.read(record["id"]) == record
    assert [p.name for p in store.root.iterdir() if p.is_file()] == [f"{record['id']}.json"]


def test_a_reader_that_changes_its_record_does_not_change_the_next_readers(stored):
    store, record = stored
    first = store.read(record["id"])
    first["status"], first["extra"] = "failed", 1
    assert store.read(record["id"]) == record


def test_a_record_written_before_checksums_reads_as_it_is_and_is_sealed_when_written_again(stored):
    store, record = stored
    path = store.path(record["id"])
    unsealed = {k: v for k, v in json.loads(path.read_text()).items() if k != "checksum"}
    path.write_text(json.dumps(unsealed))
    assert store.read(record["id"]) == record
    store.write(record)
    assert json.loads(path.read_text())["checksum"] == checksum(unsealed)


def test_a_record_reads_back_whatever_its_keys(stored):
    store, record = stored
    store.write({**record, "by_step": {2: 0.5, 10: 0.25}})  # JSON makes every key a string, and sorts them as strings
    assert store.read(record["id"])["by_step"] == {"2": 0.5, "10": 0.25}


def test_a_record_is_readable_by_others_as_a_committed_one_is(stored):
    store, record = stored
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(store.path(record["id"]).stat().st_mode) == 0o666 & ~umask  # 0644 under the usual umask 022


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda text, rec: text[: len(text) // 2], "not valid JSON"),
        (lambda text, rec: json.dumps({k: v for k, v in rec.items() if k != "val"}), "lacks fields val"),
        (lambda text, rec: json.dumps({**rec, "format": 0}), "record format 0"),
        (lambda text, rec: json.dumps({**rec, "final_val_loss": rec["final_val_loss"] - 0.01}), "does not match its checksum"),  # an edited loss
        (lambda text, rec: text.replace('"val": {', '"val": {"x": 1, ', 1), "does not match its checksum"),  # still valid JSON
        (lambda text, rec: _sealed({**rec, "spec": {**rec["spec"], "seed": 9}}), "hash does not match"),
    ],
)
def test_untrustworthy_records_are_quarantined_and_redone(stored, tiny_spec, damage, reason):
    store, record = stored
    path = store.path(record["id"])
    assert store.read(record["id"]) == record  # read once: a verified record is kept, and must not hide a later edit
    path.write_text(damage(path.read_text(), json.loads(path.read_text())))
    with pytest.warns(CorruptRecordWarning, match=reason):
        assert store.read(record["id"]) is None
    assert (store.quarantine / path.name).exists()
    [redone] = run_specs([tiny_spec], store, workers=1, progress=False)
    assert redone["train"]["loss"] == record["train"]["loss"]


def test_sweep_skips_runs_the_store_has(stored, tiny_spec, monkeypatch):
    store, _ = stored
    calls = []
    real = runner.train_members
    monkeypatch.setattr(runner, "train_members", lambda specs: calls.append(len(specs)) or real(specs))
    run_specs([tiny_spec, tiny_spec.replace(seed=1), tiny_spec.replace(seed=2)], store, workers=1, progress=False)
    assert calls == [2]  # one ensemble of the two missing runs
    run_specs([tiny_spec, tiny_spec.replace(seed=1)], store, workers=1, progress=False)
    assert calls == [2]


def test_a_failing_group_is_recorded_and_retried(tmp_path, tiny_spec, monkeypatch):
    store = Store(tmp_path, "smoke", "demo")

    def boom(specs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runner, "train_members", boom)
    [record] = run_specs([tiny_spec], store, workers=1, progress=False)
    assert record["status"] == "failed" and "out of memory" in record["error"]
    monkeypatch.undo()
    [record] = run_specs([tiny_spec], store, workers=1, progress=False)
    assert record["status"] == "ok"


def test_a_record_written_before_a_field_existed_reads_back_with_it_at_its_default(stored):
    store, record = stored
    old = json.loads(store.path(record["id"]).read_text())
    del old["spec"]["decay_branches"], old["spec"]["model"]["mup_base_width"]  # as written before these fields existed
    store.path(record["id"]).write_text(_sealed(old))
    back = store.read(record["id"])
    assert back["spec"]["decay_branches"] == () and back["spec"]["model"]["mup_base_width"] is None


def _sealed(record: dict) -> str:
    """A record's JSON with its checksum recomputed: a consistent record, as a writer would have sealed it."""
    return json.dumps({**record, "checksum": checksum(record)})


def test_a_result_kept_beside_the_runs_is_not_read_as_a_run(stored, recwarn):
    """An experiment may keep other results in its store's folder (`computed`'s exact_risks.json): listing the
    runs, as `python -m replication show` does, must neither count it nor quarantine it."""
    store, record = stored
    kept = store.root / "exact_risks.json"
    kept.write_text(json.dumps({"key": {"format": 1}, "value": {}}))
    assert store.ids() == [record["id"]]
    assert [r["id"] for r in store.records()] == [record["id"]]
    assert kept.is_file() and not any(issubclass(w.category, CorruptRecordWarning) for w in recwarn)
