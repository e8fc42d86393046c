import subprocess
import sys

from replication.cli import main


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "replication", "--help"], capture_output=True, text=True, check=True).stdout
    assert "run" in out and "sweep" in out and "show" in out


def test_sweep_then_show(tmp_path, capsys):
    assert main(["--results", str(tmp_path), "sweep", "quickstart", "--profile", "smoke"]) == 0
    table = capsys.readouterr().out
    assert "final_val_loss" in table and table.count("adamw") == 2
    assert main(["--results", str(tmp_path), "show"]) == 0
    assert "smoke/quickstart: 2 runs ok=2" in capsys.readouterr().out


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    bad = tmp_path / "params.yaml"
    bad.write_text("experiments:\n  demo:\n    run: {optimizer: {name: adamm}}\n")
    assert main(["--params", str(bad), "sweep", "demo", "--profile", "smoke"]) == 2
    assert "'adamm' is unknown" in capsys.readouterr().err


def test_a_finetuning_experiment_pretrains_first_and_starts_every_run_from_it(tmp_path, capsys):
    assert main(["--results", str(tmp_path), "sweep", "marek_finetune", "--profile", "smoke"]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + 3  # header + the smoke grid's three runs
    assert main(["--results", str(tmp_path), "show"]) == 0
    assert "smoke/marek_finetune: 4 runs ok=4" in capsys.readouterr().out  # the pretraining run + three
    assert len(list((tmp_path / "smoke" / "marek_finetune" / "_weights").glob("*.pt"))) == 1
