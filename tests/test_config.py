import pytest
import yaml

from replication.params import experiment, load_params
from replication.spec import ConfigError, MODEL_PRESETS, RunSpec, run_spec_from_dict
from tests.conftest import TINY


def _params(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_it_and_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"run\.optimizer\.lrr: unknown key \(did you mean 'lr'\?\)"):
        run_spec_from_dict({"optimizer": {"lrr": 1e-3}})


@pytest.mark.parametrize("block,where", [("run: {optimzer: {lr: 0.1}}", "run.optimzer"),
                                         ("profiles: {smoke: {run: {model: {widht: 8}}}}", "profiles.smoke.run.model.widht"),
                                         ("experiments: {demo: {run: {data: {seqlen: 8}}}}", "experiments.demo.run.data.seqlen")])
def test_a_typo_is_named_in_the_run_block_where_it_was_written(block, where):
    params = {"experiments": {"demo": {}}, **yaml.safe_load(block)}
    params["experiments"]["demo"] = params["experiments"]["demo"] or {}
    with pytest.raises(ConfigError, match=rf"^{where.replace('.', '[.]')}: unknown key"):
        experiment(params, "demo", "smoke")


def test_unknown_optimizer_lists_the_accepted_ones():
    with pytest.raises(ConfigError, match="'adamm' is unknown.*choose one of: adafactor, adamw, muon, sgd"):
        run_spec_from_dict({"optimizer": {"name": "adamm"}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"run\.batch_size: expected an integer, got 'big'"):
        run_spec_from_dict({"batch_size": "big"})


@pytest.mark.parametrize(
    "override, message",
    [
        ({"batch_size": 0}, r"batch_size: 0 must be > 0"),
        ({"optimizer": {"lr": -1}}, r"optimizer\.lr: -1\.0 must be > 0"),
        ({"optimizer": {"beta2": 1.0}}, r"optimizer\.beta2: 1\.0 must lie in \[0, 1\)"),
        ({"optimizer": {"beta2_half_life_tokens": 0}}, r"beta2_half_life_tokens: 0\.0 must be > 0"),
        ({"tokens": 10}, r"tokens: 10 is smaller than one step"),
        ({"micro_batch_size": 3}, r"micro_batch_size: 3 does not divide batch_size 16"),
        ({"model": {"width": 100, "head_dim": 32}}, r"not a multiple of head_dim"),
        ({"model": {"preset": "huge"}}, r"model\.preset: 'huge' is unknown"),
        ({"eval_spacing": 1.0}, r"eval_spacing: 1\.0 must lie in \(1, 2\]"),
        ({"stop_below": 0}, r"stop_below: 0\.0 must be > 0"),
        ({"noise_scale_batches": 1}, r"noise_scale_batches: 1 must be >= 2"),
        ({"lora_rank": 4, "noise_scale_batches": 2}, r"noise_scale_batches\) of LoRA runs is not supported"),
    ],
)
def test_bad_values_raise_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        run_spec_from_dict(override)


def test_yaml_exponent_strings_are_numbers():
    spec = run_spec_from_dict(yaml.safe_load("optimizer: {lr: 1e-3}\ntokens: 2e6"))
    assert spec.optimizer.lr == 1e-3 and spec.tokens == 2_000_000


def test_preset_expands_to_dimensions():
    assert run_spec_from_dict({"model": {"preset": "mini"}}).model.width == MODEL_PRESETS["mini"]["width"]


def test_hash_is_stable_and_changes_with_the_spec():
    a, b = run_spec_from_dict(TINY), run_spec_from_dict(TINY)
    assert a.hash == b.hash
    assert a.replace(**{"optimizer.lr": 1e-2}).hash != a.hash
    assert a.replace(seed=1).hash != a.hash


def test_experiment_layers_and_grid(tmp_path):
    path = _params(
        tmp_path,
        """
profile: smoke
run: {batch_size: 8, tokens: 100000, optimizer: {lr: 1.0e-3}}
profiles:
  smoke: {run: {tokens: 50000}}
experiments:
  demo:
    run: {optimizer: {name: sgd}}
    grid: {optimizer.lr: [0.1, 0.2], seed: [0, 1]}
    profiles:
      smoke: {grid: {seed: [5]}}
""",
    )
    exp = experiment(load_params(path), "demo", "smoke")
    specs = exp.expand()
    assert [(s.optimizer.lr, s.seed) for s in specs] == [(0.1, 5), (0.2, 5)]
    assert all(s.tokens == 50000 and s.batch_size == 8 and s.optimizer.name == "sgd" for s in specs)


def test_grid_errors(tmp_path):
    path = _params(tmp_path, "experiments:\n  demo:\n    grid: {optimizer.lrr: [1]}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' \(did you mean 'lr'\?\)"):
        experiment(load_params(path), "demo", "cpu")
    path = _params(tmp_path, "experiments:\n  demo:\n    grid: {seed: []}\n")
    with pytest.raises(ConfigError, match="expands to no runs"):
        experiment(load_params(path), "demo", "cpu").expand()


def test_params_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"profiles: 'laptop' is unknown"):
        load_params(_params(tmp_path, "profiles: {laptop: {}}\n"))
    with pytest.raises(ConfigError, match=r"experimnts: unknown key \(did you mean 'experiments'\?\)"):
        load_params(_params(tmp_path, "experimnts: {}\n"))
    with pytest.raises(ConfigError, match=r"experiment: 'missing' is unknown"):
        experiment(load_params(_params(tmp_path, "experiments: {demo: {}}\n")), "missing", "cpu")


def test_repository_params_expand_for_every_profile():
    params = load_params("params.yaml")
    for name in params["experiments"]:
        for profile in ("smoke", "cpu", "gpu"):
            assert experiment(params, name, profile).expand()


def test_a_list_of_grids_and_lr_scaled_with_batch_size(tmp_path):
    path = _params(
        tmp_path,
        """
experiments:
  demo:
    lr_batch_exponent: 0.5
    grid:
      - {optimizer.name: [sgd], optimizer.lr: [0.1], batch_size: [1, 4]}
      - {optimizer.name: [adamw], optimizer.lr: [1.0e-3], batch_size: [16]}
""",
    )
    specs = experiment(load_params(path), "demo", "cpu").expand()
    assert [(s.optimizer.name, s.batch_size, s.optimizer.lr) for s in specs] == [
        ("sgd", 1, 0.1), ("sgd", 4, pytest.approx(0.2)), ("adamw", 16, pytest.approx(4e-3))
    ]
    bad = _params(tmp_path, "experiments:\n  demo:\n    grid: [{seed: 3}]\n")
    with pytest.raises(ConfigError, match=r"grid\[0\]\.seed: expected a list of values"):
        experiment(load_params(bad), "demo", "cpu")


def test_fields_added_later_keep_the_names_of_earlier_runs():
    """Records written before init_from / lora / data.domain / eval_spacing / stop_below / noise_scale_batches /
    decay_branches / model.mup_base_width / schedule.warmup_tokens / tasks existed must keep their names (hashes)."""
    import hashlib
    import json

    from replication.record import RECORD_FORMAT

    spec = RunSpec()
    old = spec.to_dict()
    for key in ("init_from", "lora_rank", "lora_alpha", "compile", "eval_spacing", "stop_below", "noise_scale_batches", "decay_branches", "tasks"):
        del old[key]
    del old["data"]["domain"], old["model"]["mup_base_width"], old["schedule"]["warmup_tokens"]
    canonical = json.dumps({"format": RECORD_FORMAT, "spec": old}, sort_keys=True)
    assert spec.hash == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert spec.replace(compile="true").hash == spec.replace(compile="false").hash == spec.hash  # how, not what
    assert spec.replace(lora_rank=4).hash != spec.hash
    assert spec.replace(stop_below=3.0).hash != spec.hash
    assert spec.replace(**{"data.domain": "histories/*"}).hash != spec.hash
    assert spec.replace(**{"model.mup_base_width": 64}).hash != spec.hash
    assert spec.replace(**{"schedule.warmup_tokens": 4096}).hash != spec.hash
    assert spec.replace(tasks="0123456789abcdef").hash != spec.hash


def test_topic_settings_name_an_unknown_or_missing_key():
    from replication.params import experiment, load_params

    exp = experiment(load_params("params.yaml"), "power_lr_surface", "smoke")
    with pytest.raises(ConfigError, match=r"settings\.budget: unknown key \(did you mean 'budgets'\?\)"):
        exp.__class__(exp.name, exp.profile, exp.base, exp.grids, {**exp.settings, "budget": 1}).checked_settings(tuple(exp.settings))
    without_seeds = exp.__class__(exp.name, exp.profile, exp.base, exp.grids, {k: v for k, v in exp.settings.items() if k != "seeds"})
    with pytest.raises(ConfigError, match=r"settings: missing seeds"):
        without_seeds.checked_settings(tuple(exp.settings))
