"""The training step (forward and backward over the micro-batches), compiled where it pays.

What is compiled is the loss graph after the embedding lookup (`GPT.losses`): the forward pass and,
through AOTAutograd, its backward; the lookup and its scatter-add backward stay eager. The
optimizer stays torch.optim's fused kernel, run eagerly after the step: on CPU it is already one pass
over every tensor, and compiling the foreach optimizer over an ensemble's hundreds of tensors took
minutes on two cores (docs/performance.md, "Speed II"). So no learning rate, beta or schedule is ever part of a
compiled graph, and members that differ in them (or change them every step) cannot cause a recompile.

`run.compile` chooses: `true` compiles, `false` runs eagerly, `auto` compiles where it pays: always on
CUDA, and on CPU once a group trains for at least `COMPILE_MIN_TFLOP_CPU` TFLOP (about two minutes of
eager training on a 2-core machine; a cold compile costs 15-50 s there). A compile that fails falls
back to eager with one warning; it never fails a run.
"""

from __future__ import annotations

import time
import warnings

import torch

from replication.model import GPT

COMPILE_MIN_TFLOP_CPU = 6.0
RECOMPILE_LIMIT = 64  # dynamo's per-function cache: one entry per distinct (members, batch, seq) shape in a process
_warned: set[str] = set()


def should_compile(setting: str, device: torch.device, group_flops: float, lora: bool) -> tuple[bool, str]:
    """Whether a group compiles, and why (recorded with every run)."""
    if setting == "false":
        return False, "compile: false"
    if lora:
        return False, "LoRA adapters (peft modules) train eagerly"
    if setting == "true":
        return True, "compile: true"
    if device.type == "cuda":
        return True, "auto: CUDA"
    if group_flops >= COMPILE_MIN_TFLOP_CPU * 1e12:
        return True, f"auto: {group_flops / 1e12:.1f} TFLOP >= {COMPILE_MIN_TFLOP_CPU:g}"
    return False, f"auto: {group_flops / 1e12:.2f} TFLOP < {COMPILE_MIN_TFLOP_CPU:g} (a compile would not pay back)"


class TrainStep:
    """`step(x, y, n_micro)`: forward and backward of every active member on x, y [M, B, T], the batch
    split into `n_micro` micro-batches (gradient accumulation); returns each member's mean loss [M].

    Gradients accumulate in the model; the caller runs the optimizer and zeroes them.
    """

    def __init__(self, model: GPT, device: torch.device, compile: bool, reason: str = "", bf16: bool | None = None):
        self.model, self.device = model, device
        self.bf16 = device.type == "cuda" if bf16 is None else bf16  # bf16 autocast: on GPU; on CPU only when asked (tests)
        self.losses = model.losses  # after the embedding lookup, which stays eager (see GPT.losses)
        self.compiled, self.reason = compile, reason
        self.compile_s: float | None = None  # wall time of the first compiled step (compilation included)
        self.error: str | None = None
        self._first = compile
        if compile:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            # CPU: a C++ wrapper around the kernels (measured 5-15 % faster at batch size 1); CUDA: CUDA graphs
            # (shapes are static within a group).
            options = {"cpp_wrapper": True} if device.type == "cpu" else None
            mode = "reduce-overhead" if device.type == "cuda" else None
            self.losses = torch.compile(model.losses, dynamic=False, mode=mode, options=options)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, n_micro: int = 1) -> torch.Tensor:
        if not self._first:
            return self._step(x, y, n_micro)
        self._first = False
        start = time.perf_counter()
        try:
            out = self._step(x, y, n_micro)
        except Exception as err:  # an unsupported op, no C++ compiler, ...: train eagerly instead
            self._fall_back(err)
            return self._step(x, y, n_micro)
        self.compile_s = time.perf_counter() - start
        return out

    def _step(self, x: torch.Tensor, y: torch.Tensor, n_micro: int) -> torch.Tensor:
        micro = x.shape[1] // n_micro
        step_loss = torch.zeros(x.shape[0], device=x.device)
        for k in range(n_micro):
            xs, ys = x[:, k * micro:(k + 1) * micro], y[:, k * micro:(k + 1) * micro]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                losses = self.losses(self.model.embed(xs), ys)
            (losses.sum() / n_micro).backward()
            step_loss += losses.detach() / n_micro
        return step_loss

    def _fall_back(self, err: Exception) -> None:
        self.model.zero_grad(set_to_none=True)  # a partial backward may have left gradients
        self.losses, self.compiled = self.model.losses, False
        self.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
        self.reason = f"compilation failed, trained eagerly ({self.error})"
        if self.error not in _warned:  # one warning per distinct failure, not one per group of a sweep
            _warned.add(self.error)
            warnings.warn(f"torch.compile failed; training eagerly instead: {self.error}", stacklevel=3)

    def describe(self) -> dict:
        """What a record says about how its run executed."""
        return {"compiled": self.compiled, "compile_reason": self.reason, "compile_s": self.compile_s}

