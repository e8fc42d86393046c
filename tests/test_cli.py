import subprocess
import sys

import pytest

from replication import experiments
from replication.cli import main
from replication.params import experiment, load_params


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "replication", "--help"], capture_output=True, text=True, check=True).stdout
    assert "run" in out and "sweep" in out and "show" in out


@pytest.mark.slow
def test_sweep_then_show(tmp_path, capsys):
    assert main(["--results", str(tmp_path), "sweep", "quickstart", "--profile", "smoke"]) == 0
    table = capsys.readouterr().out
    assert "final_val_loss" in table and table.count("adamw") == 2
    assert main(["--results", str(tmp_path), "show"]) == 0
    assert "smoke/quickstart: 2 runs ok=2" in capsys.readouterr().out
    assert main(["--results", str(tmp_path), "show", "--profile", "gpu"]) == 0  # a profile with nothing stored yet
    assert "gpu: no runs stored yet" in capsys.readouterr().out
    assert main(["--results", str(tmp_path), "show", "--profile", "gpuu"]) == 2
    err = capsys.readouterr().err
    assert "'gpuu' is unknown" in err and "choose one of: cpu, gpu, paper, smoke" in err


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("experiments:\n  demo:\n    run: {optimizer: {name: adamm}}\n")
    assert main(["--params", str(bad), "sweep", "demo", "--profile", "smoke"]) == 2
    assert "'adamm' is unknown" in capsys.readouterr().err


@pytest.mark.slow
def test_a_finetuning_experiment_pretrains_first_and_starts_every_run_from_it(tmp_path, capsys):
    assert main(["--results", str(tmp_path), "sweep", "marek_finetune", "--profile", "smoke"]) == 0
    exp = experiment(load_params(), "marek_finetune", "smoke")
    declared = experiments.declared_runs(exp, load_params(), tmp_path)
    assert len(declared) > len(exp.expand())  # the grid and its follow-ups (the best arms re-seeded)
    assert capsys.readouterr().out.count("\n") == 1 + len(declared)  # header + every declared run
    assert all(s.init_from and s.init_from.endswith(".pt") for s in declared)
    assert main(["--results", str(tmp_path), "show"]) == 0
    assert f"smoke/marek_finetune: {len(declared) + 1} runs ok={len(declared) + 1}" in capsys.readouterr().out  # + pretraining
    assert len(list((tmp_path / "smoke" / "marek_finetune" / "_weights").glob("*.pt"))) == 1


def test_a_missing_corpus_fails_before_training_with_one_line_and_exit_2(tmp_path, capsys):
    code = main(["--results", str(tmp_path), "run", "quickstart", "--profile", "smoke", "--set", "data.corpus=/no/such/file.txt"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == ("error: corpus path '/no/such/file.txt' does not exist "
                           "(give 'shakespeare', a text file or folder, or 'hf:<dataset>')")
    assert not list(tmp_path.rglob("*.json"))  # no failed record: nothing was trained


def test_a_domain_that_matches_nothing_fails_before_training(tmp_path, capsys):
    code = main(["--results", str(tmp_path), "run", "quickstart", "--profile", "smoke", "--set", "data.domain=nosuch/*"])
    assert code == 2 and "nosuch/*" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.json"))


def test_a_missing_init_from_file_fails_before_training(tmp_path, capsys):
    code = main(["--results", str(tmp_path), "run", "quickstart", "--profile", "smoke", "--set", "init_from=/no/such/weights.pt"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: init_from: weights file '/no/such/weights.pt' does not exist")


@pytest.mark.parametrize("item,message", [("batch_size", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"),
                                          ("optimizer.lr={bad", "is not valid JSON")])
def test_a_malformed_set_is_one_line_and_exit_2(tmp_path, capsys, item, message):
    assert main(["--results", str(tmp_path), "run", "quickstart", "--profile", "smoke", "--set", item]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --set {item!r}: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--workers", "--max-members", "--checkpoint-every-tokens"])
def test_a_count_below_one_is_refused(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_:
        main(["--results", str(tmp_path), "sweep", "quickstart", "--profile", "smoke", flag, "0"])
    assert exit_.value.code == 2 and "expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_an_unreadable_init_from_file_fails_before_training(tmp_path, capsys):
    truncated = tmp_path / "weights.pt"
    truncated.write_bytes(b"PK\x03\x04 half a zip archive")
    code = main(["--results", str(tmp_path), "run", "quickstart", "--profile", "smoke", "--set", f"init_from={truncated}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: init_from: the weights file '{truncated}' cannot be read") and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.json"))


def test_a_binary_corpus_is_refused_before_training(tmp_path, capsys):
    binary = tmp_path / "corpus.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    code = main(["--results", str(tmp_path), "run", "quickstart", "--profile", "smoke", "--set", f"data.corpus={binary}"])
    err = capsys.readouterr().err
    assert code == 2 and f"corpus file '{binary}' is not text" in err
    assert not list(tmp_path.rglob("*.json"))


def test_a_run_that_fails_while_training_shows_why_and_exits_1(tmp_path, capsys, monkeypatch):
    import replication.runner

    def broken(*args, **kwargs):
        raise RuntimeError("the GPU fell off the bus")

    monkeypatch.setattr(replication.runner, "train_members", broken)
    assert main(["--results", str(tmp_path), "sweep", "quickstart", "--profile", "smoke", "--workers", "1"]) == 1
    out, err = capsys.readouterr()
    assert out.count("failed") == 2
    assert "RuntimeError: the GPU fell off the bus" in err and "2 of 2 runs failed" in err
    assert sweep_table_has_error_column(tmp_path)


def sweep_table_has_error_column(results) -> bool:
    from replication.store import Store
    from replication.experiments import table

    records = Store(results, "smoke", "quickstart").records()
    return all("the GPU fell off the bus" in e for e in table(records)["error"])


@pytest.mark.slow
def test_prune_lists_then_deletes_the_records_no_declared_run_names(tmp_path, capsys):
    root = str(tmp_path)
    assert main(["--results", root, "sweep", "quickstart", "--profile", "smoke"]) == 0
    assert main(["--results", root, "run", "quickstart", "--profile", "smoke", "--set", "batch_size=8"]) == 0  # an ad-hoc run
    store = experiments.stored(experiment(load_params(), "quickstart", "smoke"), root)
    declared = {s.hash for s in experiments.declared_runs(experiment(load_params(), "quickstart", "smoke"), load_params(), root)}
    assert len(store.ids()) == 3 and len(declared) == 2
    capsys.readouterr()
    assert main(["--results", root, "store", "prune", "--profile", "smoke"]) == 0
    assert "smoke/quickstart: 1 record(s) no declared run names" in capsys.readouterr().out
    assert len(store.ids()) == 3  # listed, not deleted
    assert main(["--results", root, "store", "prune", "quickstart", "--profile", "smoke", "--delete"]) == 0
    assert set(store.ids()) == declared
    assert main(["--results", root, "store", "prune", "quickstart", "--profile", "smoke"]) == 0
    assert "no stale records in quickstart" in capsys.readouterr().out


def test_prune_refuses_an_experiment_whose_runs_are_not_all_stored(tmp_path, capsys):
    """Follow-ups are declared only once the runs they follow are stored: with runs missing, which records
    are stale is not known, so nothing is listed or deleted."""
    assert main(["--results", str(tmp_path), "store", "prune", "quickstart", "--profile", "smoke", "--delete"]) == 2
    err = capsys.readouterr().err
    assert "not stored yet" in err and "sweep quickstart" in err
    assert main(["--results", str(tmp_path), "store", "prune", "quickstrat", "--profile", "smoke"]) == 2
    assert "'quickstrat' is unknown" in capsys.readouterr().err
