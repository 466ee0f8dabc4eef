"""Many clients' local training in one pass over one frozen base model.

A worker holds one frozen base with LoRA (fleet/trainer.py). Training G clients one after the other runs G
small forward and backward passes; here they run as one. Each client's batch takes its own rows of one
(G x B, T) batch; every adapter tensor becomes a stack of G copies, and each adapted layer computes

    y = W x + scaling * B_g (A_g x)        for the rows of client g        (batched matmuls, torch.bmm)

so the base's matmuls see G times the rows while every client's factors act only on its own. The loss is the
sum of the clients' own mean losses: the gradient of a client's factors is the gradient of its own loss, and
AdamW over the stacks, being elementwise, keeps each client's moments apart. Everything a single job has is
per client here: its start adapter, data, batch stream, proximal term, frozen and absent entries (rank) and
number of steps (a client whose steps are done keeps its final adapter while the others go on).

The clients of a group share the base's merged weights (FLoRA), so a group is made of jobs from one base
version. A client's update trained in a group equals the one `LocalTrainer.train` gives to float rounding
(the batched products sum in another order, and each adapted linear layer has a backward of its own); with
LoRA dropout above 0 each client draws its own seeded masks, of the same distribution as alone but not the same
draws. A group trains on its trainer's device and in
its `train_dtype`, as that trainer would train each job alone (fleet/trainer.py).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from fleet.rng import stream, stream_key
from fleet.trainer import LocalTrainer, TrainJob, TrainResult, train_mode, training_precision, windows


class GroupedLora:
    """One adapted linear layer for G clients: the frozen base layer and stacked factors A (G, r, d_in),
    B (G, d_out, r)."""

    def __init__(self, base: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, scaling: float, dropout: float,
                 generators: list[torch.Generator]):
        self.base, self.a, self.b, self.scaling = base, a, b, scaling
        self.dropout, self.generators = dropout, generators

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.dropout == 0 and type(self.base) is torch.nn.Linear and not torch.is_autocast_enabled(x.device.type):
            return GroupedLoraLinear.apply(x, self.base.weight, self.base.bias, self.a, self.b, self.scaling)
        y = self.base(x)
        g = self.a.shape[0]
        xs = x.reshape(g, -1, x.shape[-1])  # client g's rows are the g-th block of the batch
        if self.dropout > 0:
            xs = xs * client_dropout_masks(xs, self.dropout, self.generators)
        # y + scaling * B_g A_g x in one pass over y (baddbmm), not three
        out = torch.baddbmm(y.reshape(g, -1, y.shape[-1]), torch.bmm(xs, self.a.transpose(1, 2)),
                            self.b.transpose(1, 2), alpha=self.scaling)
        return out.reshape(y.shape)


class GroupedLoraLinear(torch.autograd.Function):
    """y = W x + bias + scaling * B_g A_g x on client g's rows of a frozen linear layer, with its backward
    written out. Autograd's graph of the same sum makes extra passes over x and y (it copies y's gradient and
    sums x's two gradients apart), and takes the rank-r products as x A^T, a shape the matmul kernels run at
    half the speed of A x^T. On a CPU this more than halves what LoRA adds to a layer's time in a group."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling):
        g = a.shape[0]
        rows = x.reshape(-1, x.shape[-1])
        xs = rows.view(g, -1, rows.shape[-1])  # client g's rows are the g-th block
        zt = torch.bmm(a, xs.transpose(1, 2))  # (G, r, N): A_g x^T
        y = torch.nn.functional.linear(rows, weight, bias)
        y.view(g, -1, y.shape[-1]).baddbmm_(zt.transpose(1, 2), b.transpose(1, 2), alpha=scaling)
        ctx.save_for_backward(xs, zt, weight, a, b)
        ctx.scaling = scaling
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        xs, zt, weight, a, b = ctx.saved_tensors
        g, s = a.shape[0], ctx.scaling
        gy_rows = grad_y.reshape(-1, grad_y.shape[-1])
        gy = gy_rows.view(g, -1, gy_rows.shape[-1])
        gzt = torch.bmm(b.transpose(1, 2), gy.transpose(1, 2)).mul_(s)  # (G, r, N)
        grad_x = None
        if ctx.needs_input_grad[0]:  # not for the first block's input, the frozen embedding's output
            grad_x = gy_rows @ weight
            grad_x.view(g, -1, grad_x.shape[-1]).baddbmm_(gzt.transpose(1, 2), a)
            grad_x = grad_x.view(grad_y.shape[:-1] + (grad_x.shape[-1],))
        grad_a = torch.bmm(gzt, xs)
        grad_b = torch.bmm(zt, gy).mul_(s).transpose(1, 2)
        return grad_x, None, None, grad_a, grad_b, None


class GroupedBottleneck:
    """A block's bottleneck adapter for G clients: h + up_g(gelu(down_g(h))) on client g's rows."""

    def __init__(self, down_w: torch.Tensor, down_b: torch.Tensor, up_w: torch.Tensor, up_b: torch.Tensor):
        self.down_w, self.down_b, self.up_w, self.up_b = down_w, down_b, up_w, up_b

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        hs = h.reshape(self.down_w.shape[0], -1, h.shape[-1])
        inner = torch.nn.functional.gelu(torch.baddbmm(self.down_b[:, None, :], hs, self.down_w.transpose(1, 2)))
        return h + torch.baddbmm(self.up_b[:, None, :], inner, self.up_w.transpose(1, 2)).reshape(h.shape)


def client_dropout_masks(xs: torch.Tensor, p: float, generators: list[torch.Generator]) -> torch.Tensor:
    """(G, N, d) inverted-dropout masks, client g's drawn from its own generator."""
    keep = torch.empty_like(xs)
    for g, generator in enumerate(generators):
        keep[g].bernoulli_(1.0 - p, generator=generator)
    return keep / (1.0 - p)


class GroupedTrainer:
    """Trains a group of jobs at once on a worker's model (a `LocalTrainer`'s: its base, layout and
    settings)."""

    def __init__(self, trainer: LocalTrainer):
        self.trainer = trainer
        self.layout = trainer.layout
        model = trainer.model
        self._lora = {pair.module: model.get_submodule(pair.module) for pair in self.layout.pairs}
        lora = next(iter(self._lora.values()), None)
        # peft puts an Identity in place of dropout at p = 0
        self._dropout = 0.0 if lora is None else float(getattr(lora.lora_dropout["default"], "p", 0.0))
        # Other trainable tensors must be bottleneck adapters: <block>.bottleneck.{down,up}.{weight,bias}
        others = sorted({s.name.rsplit(".", 2)[0] for s in self.layout.segments if s.kind == "other"})
        unknown = [module for module in others if not module.endswith("bottleneck")]
        if unknown:
            raise ValueError(f"grouped training knows LoRA factors and bottleneck adapters, not {unknown[0]}")
        self._bottlenecks = others

    def train(self, jobs: list[TrainJob], starts: list[torch.Tensor], tokens: list[np.ndarray],
              base_delta: torch.Tensor | None = None) -> list[TrainResult]:
        """Each job trained from its start adapter on its tokens, as `LocalTrainer.train` would one at a time."""
        if not jobs:
            return []
        s, layout, g, device = self.trainer.settings, self.layout, len(jobs), self.trainer.device
        self.trainer.set_base_delta(base_delta)
        masks = [self.trainer.masks(job.groups, job.rank) for job in jobs]
        targets = torch.stack([start.to(device) for start in starts]).clone()
        for i, (absent, _, _) in enumerate(masks):
            targets[i, absent] = 0.0  # components beyond a client's rank are absent: zero
        params = [torch.nn.Parameter(seg.view(targets).clone()) for seg in layout.segments]
        anchors = [seg.view(targets) for seg in layout.segments]
        fixed = (torch.stack([m[1][k] for m in masks]) for k in range(len(layout.segments)))
        # Only the tensors that have frozen or absent entries are reset after each step.
        resets = [(p, a, m) for p, a, m in zip(params, anchors, fixed) if m.any()]
        prox = [torch.stack([m[2][k] for m in masks]) for k in range(len(layout.segments))]
        mu = torch.tensor([job.prox_mu for job in jobs], dtype=torch.float32, device=device)
        proximal = any(job.prox_mu > 0 for job in jobs)  # known on the host: no wait for the device each step
        steps = np.array([job.steps for job in jobs])
        rngs = [stream(s.seed, "batches", job.client, job.round) for job in jobs]
        data = [self._tokens(job, t) for job, t in zip(jobs, tokens)]
        generators = [torch.Generator(device=device).manual_seed(
            stream_key(s.seed, "dropout", job.client, job.round) % 2**63) for job in jobs]
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        finals: list[list[torch.Tensor] | None] = [None] * g
        losses: list[list[float]] = [[] for _ in jobs]
        train_mode(self.trainer.model)
        with self._installed(params, generators):
            for step in range(int(steps.max())):
                going = steps > step
                active = torch.from_numpy(going).to(device)
                # A client whose steps are done keeps its rows (zeros, outside the objective): the batch keeps its
                # shape, and every client's rows stay where its factors act.
                batch = torch.cat([windows(d, rng.integers(0, 2**31, s.batch_size), s.seq_len + 1)
                                   if going[i] else torch.zeros(s.batch_size, s.seq_len + 1, dtype=torch.int64)
                                   for i, (d, rng) in enumerate(zip(data, rngs))]).to(device)
                with training_precision(device, s.train_dtype):
                    loss = self._client_losses(batch, g)
                objective = (loss * active).sum()
                if proximal:
                    objective = objective + (mu / 2 * active * sum(
                        (((p - a) ** 2) * m).flatten(1).sum(1) for p, a, m in zip(params, anchors, prox))).sum()
                opt.zero_grad(set_to_none=True)
                objective.backward()
                opt.step()
                with torch.no_grad():
                    for p, a, m in resets:  # frozen and absent entries keep their value
                        p[m] = a[m]
                    for i in np.flatnonzero(steps == step + 1):  # done: keep what it has, whatever the others do
                        finals[i] = [p[i].clone() for p in params]
                    for i in np.flatnonzero(steps <= step):
                        for p, f in zip(params, finals[i]):
                            p[i] = f
                values = loss.detach().cpu().tolist()  # one copy to the host per step, not one per client
                for i in np.flatnonzero(going):
                    losses[i].append(values[i])
        trained = torch.cat([p.detach().reshape(g, -1) for p in params], dim=1)
        deltas = (trained - targets).cpu()
        return [TrainResult(job, deltas[i].clone(), int(len(tokens[i])), losses[i][0], losses[i][-1])
                for i, job in enumerate(jobs)]

    def _tokens(self, job: TrainJob, tokens: np.ndarray) -> np.ndarray:
        if not job.poison:
            return tokens
        s = self.trainer.settings
        return stream(s.seed, "poison", job.client, job.round).integers(0, self.trainer.model.config.vocab_size,
                                                                          len(tokens))

    def _client_losses(self, batch: torch.Tensor, g: int) -> torch.Tensor:
        """(G,) each client's mean next-token cross-entropy over its rows of the (G x B, T+1) batch."""
        logits = self.trainer.model(input_ids=batch[:, :-1]).logits.float()  # bf16 under autocast: cast up
        per_token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                      reduction="none")
        return per_token.reshape(g, -1).mean(1)

    @contextlib.contextmanager
    def _installed(self, params: list[torch.nn.Parameter], generators: list[torch.Generator]):
        """The model's adapted layers and bottlenecks compute with the stacks while the group trains."""
        by_name = {seg.name: p for seg, p in zip(self.layout.segments, params)}
        patched = []
        for pair in self.layout.pairs:
            module = self._lora[pair.module]
            module.forward = GroupedLora(module.base_layer, by_name[pair.a.name], by_name[pair.b.name],
                                         self.layout.scaling, self._dropout, generators)
            patched.append(module)
        for name in self._bottlenecks:
            module = self.trainer.model.get_submodule(name)
            module.forward = GroupedBottleneck(*(by_name[f"{name}.{part}"] for part in
                                                 ("down.weight", "down.bias", "up.weight", "up.bias")))
            patched.append(module)
        try:
            yield
        finally:
            for module in patched:
                del module.forward
