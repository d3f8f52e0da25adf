"""Optimizer and scheduler, built from their `_target_` config (optim.optimizer, optim.scheduler).

The default is AdamW and transformers' get_linear_schedule_with_warmup (warmup over
optim.warmup_ratio of the steps, then linear decay to zero). The orchestrator passes what it
owns (params, lr, weight_decay; optimizer, warmup and total steps); any other key of the node is
the callable's own argument, e.g. `+optim.optimizer.betas=[0.9,0.95]`.

A transformers schedule is a factor lambda(s) of the scheduler's count s, which starts at 0, and
its warm-up is lambda(s) = s / warmup: the first optimizer step would train at LR 0, a step thrown
away (and the whole warm-up one step late). With optim.schedule_shift (the default) the scheduler is
advanced once when built, so step k trains at lambda(k): the first at 1 / warmup, the full LR from
step `warmup` on (moonshine-voice's (step + 1) / warmup, counted from 0), and a decaying schedule
is given steps + 1 in all, so its zero falls after the last step instead of on it. The count is part
of the scheduler's state_dict: a resumed run continues at exactly the same factor.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any

from orchestrator.config.schema import OptimConf
from orchestrator.config.spec import OPTIMIZER_ARGS, SCHEDULER_ARGS, RunSpec
from orchestrator.errors import ConfigError


def _partial(node: dict[str, Any]):
    from hydra.utils import instantiate

    return instantiate(dict(node), _partial_=True, _convert_="all")


def build_optimizer(params, optim: OptimConf):
    return _partial(optim.optimizer)(params, lr=optim.lr, weight_decay=optim.weight_decay)


def build_scheduler(optimizer, spec: RunSpec):
    """The scheduler, given the warmup and total steps; the total only if it takes one (transformers'
    get_constant_schedule_with_warmup has no decay, so no num_training_steps). With
    optim.schedule_shift, advanced once: the first optimizer step trains at lambda(1), not 0."""
    from hydra.utils import get_object

    shift = int(spec.optim.schedule_shift)
    steps = dict(num_warmup_steps=spec.warmup_steps, num_training_steps=spec.optim.steps + shift)
    taken = _taken(get_object(spec.optim.scheduler["_target_"]), steps)
    scheduler = _partial(spec.optim.scheduler)(optimizer, **taken)
    if shift:
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": on purpose here
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            scheduler.step()
    return scheduler


def _taken(func, offered: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `offered` that `func` accepts (all of them if it takes **kwargs)."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return offered
    return {k: v for k, v in offered.items() if k in params}


def check_buildable(optim: OptimConf) -> dict[str, str]:
    """Import both targets and bind their arguments (no parameters needed): a typo in a dotted
    path or an argument the callable does not take fails here, in `plan`, not at step 0.
    Returns {"optimizer": target, "scheduler": target}."""
    from hydra.utils import get_object

    out = {}
    for key, node, given in (("optimizer", optim.optimizer, OPTIMIZER_ARGS),
                             ("scheduler", optim.scheduler, SCHEDULER_ARGS)):
        target = node["_target_"]
        try:
            func = get_object(target)
        except Exception as exc:  # noqa: BLE001 - ImportError, AttributeError, ...: all mean "no such callable"
            raise ConfigError(f"cannot import {target!r} ({type(exc).__name__})", where=f"optim.{key}._target_",
                              fix="give the dotted path of a callable, e.g. torch.optim.AdamW") from None
        kwargs = {k: v for k, v in node.items() if not k.startswith("_")}
        try:
            offered = dict.fromkeys(given[1:])
            if key == "scheduler":  # as build_scheduler: the total steps only where it is taken
                offered = _taken(func, offered)
            inspect.signature(func).bind(None, **offered, **kwargs)  # as built above
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{target} cannot take these arguments: {exc}", where=f"optim.{key}",
                              fix=f"keep only arguments {target} accepts (it is given {', '.join(given)})") from None
        out[key] = target
    return out
