"""Optimizers of ``--train.optimizer``: Adam and LARS.

LARS (You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks", 2017) scales
each parameter tensor's step by a trust ratio, so that every layer moves by about the same
fraction ``eta`` of its own norm. The official MER-DG plain-fusion script trains with LARS
(momentum 0.9, eta 0.001, weight decay 1e-6, biases and normalisation parameters excluded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from merdg.config import OPTIMIZERS, TrainConfig


class LARS(torch.optim.Optimizer):
    """Momentum SGD with a layer-wise trust ratio (LARS).

    For each parameter tensor w with gradient g, weight decay wd, trust coefficient eta,
    momentum m and learning rate lr:

        u = g + wd * w
        ratio = eta * ||w|| / (||g|| + wd * ||w|| + eps)   (1 when ||w|| or ||g|| is 0)
        buffer = m * buffer + ratio * u
        w = w - lr * buffer

    The ratio's denominator ||g|| + wd * ||w|| is that of You et al. (2017). With
    ``exclude_bias_and_norm``, tensors with one dimension or fewer (biases and the scales and
    shifts of normalisation layers) get ``u = g`` and ``ratio = 1``, so no weight decay and no
    adaptation. The official MER-DG script turns the matching option on (``exclude_bias_n_norm``).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        exclude_bias_and_norm: bool = True,
        eps: float = 1e-8,
    ):
        if lr <= 0:
            raise ValueError(f"LARS learning rate must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"LARS weight decay must be >= 0, got {weight_decay}")
        if eta <= 0:
            raise ValueError(f"LARS trust coefficient eta must be > 0, got {eta}")
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta,
                    "exclude_bias_and_norm": exclude_bias_and_norm, "eps": eps}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; return the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                update = self._scaled_update(param, group)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                param.add_(buffer, alpha=-group["lr"])
        return loss

    @staticmethod
    def _scaled_update(param: torch.Tensor, group: dict) -> torch.Tensor:
        """Return ratio * (g + wd * w) for an adapted tensor, or g for an excluded one."""
        grad = param.grad
        if group["exclude_bias_and_norm"] and param.ndim <= 1:
            return grad.clone()
        weight_decay = group["weight_decay"]
        param_norm = torch.linalg.vector_norm(param)
        grad_norm = torch.linalg.vector_norm(grad)
        ratio = group["eta"] * param_norm / (grad_norm + weight_decay * param_norm + group["eps"])
        ratio = torch.where((param_norm > 0) & (grad_norm > 0), ratio, torch.ones_like(ratio))
        return grad.add(param, alpha=weight_decay).mul_(ratio)


def parameter_groups(model: nn.Module, train: TrainConfig) -> list[dict]:
    """Split the model's parameters that require gradients into optimizer parameter groups.

    The group named "encoders" contains the parameters of ``model.encoders`` (when the model has
    that attribute) with learning rate ``train.lr * train.encoder_lr_scale``. The group named
    "heads" contains every other parameter (fusion head, MER projectors, host method modules)
    with ``train.lr``. An empty group is left out.
    """
    encoders = getattr(model, "encoders", None)
    encoder_ids = {id(param) for param in encoders.parameters()} if isinstance(encoders, nn.Module) else set()
    trainable = [param for param in model.parameters() if param.requires_grad]
    groups = [
        {"name": "encoders", "params": [param for param in trainable if id(param) in encoder_ids],
         "lr": train.lr * train.encoder_lr_scale},
        {"name": "heads", "params": [param for param in trainable if id(param) not in encoder_ids], "lr": train.lr},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """Return the optimizer ``--train.optimizer`` names, over the model's parameters that require gradients.

    Frozen backbone stages, frozen small encoders and the weight-averaged teacher of CMRF require
    no gradient, so they are left out. The encoders train at ``--train.encoder_lr_scale`` times
    the learning rate (see ``parameter_groups``).
    """
    parameters = parameter_groups(model, train)
    if train.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=train.lr, weight_decay=train.weight_decay)
    if train.optimizer == "lars":
        return LARS(parameters, lr=train.lr, momentum=train.lars_momentum, weight_decay=train.weight_decay,
                    eta=train.lars_eta, exclude_bias_and_norm=train.lars_exclude_bias_and_norm)
    raise ValueError(f"unknown optimizer {train.optimizer!r}; choose from {list(OPTIMIZERS)} (--train.optimizer)")
