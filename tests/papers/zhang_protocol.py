"""Synthetic records for the steps-to-target protocol (shared by the tests of zhang_steps_to_target,
zhang_data_size and zhang_model_size): loss curves that follow a known law, so S(B) and B* are known."""

import dataclasses

import numpy as np

from replication.params import experiment, load_params
from replication.record import new_record
from replication.store import Store
from replication.train import log_spaced_steps

B_NOISE = 24.0  # sequences: the synthetic runs' noise scale


def zhang_experiment(name="zhang_steps_to_target", **settings):
    exp = experiment(load_params("params.yaml"), name, "cpu")
    return dataclasses.replace(exp, settings={**exp.settings, **settings})


def fake_record(spec, seed_noise=0.01) -> dict:
    """A record whose EWA loss falls as a power of the effective tokens, tokens / (1 + B / B_NOISE), best at
    the middle LR multiplier; it stops where `stop_below` says, like the trainer."""
    d_ref = 2.0 * 1e-2 * (spec.batch_size / 4) ** 0.5
    quality = np.exp(-0.5 * np.log(spec.optimizer.lr / d_ref * 2) ** 2)
    jitter = np.exp(np.random.default_rng(spec.seed).normal(0, seed_noise))
    r = new_record(spec, {})
    for step in sorted(log_spaced_steps(1.05, spec.steps) | {spec.steps}):
        tokens = step * spec.tokens_per_step
        loss = 3 + 4 * (tokens * quality * jitter / (1 + spec.batch_size / B_NOISE) / 1000) ** -0.3
        r["val"]["step"].append(step)
        r["val"]["tokens"].append(tokens)
        r["val"]["loss"].append(loss)
        if spec.stop_below is not None and loss <= spec.stop_below:
            r["stopped_at_step"] = step
            break
    r.update(steps=r["val"]["step"][-1], tokens=r["val"]["tokens"][-1], final_val_loss=r["val"]["loss"][-1],
             best_val_loss=min(r["val"]["loss"]), epochs=0.1)
    return r


def fill(exp, root, topic) -> list:
    """Write fake records for whatever `topic` declares until it declares nothing new."""
    store = Store(root, exp.profile, exp.name)
    while True:
        specs = topic.runs(exp, {}, root)
        missing = [s for s in specs if store.read(s.hash) is None]
        if not missing:
            return specs
        for s in missing:
            store.write(fake_record(s))


