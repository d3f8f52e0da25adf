"""Optimizer and scheduler, built from their `_target_` config (optim.optimizer, optim.scheduler).

The default is AdamW and transformers' get_linear_schedule_with_warmup (warmup over
optim.warmup_ratio of the steps, then linear decay to zero). The orchestrator passes what it
owns (params, lr, weight_decay; optimizer, warmup and total steps); any other key of the node is
the callable's own argument, e.g. `+optim.optimizer.betas=[0.9,0.95]`.
"""
from __future__ import annotations

import inspect
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
    return _partial(spec.optim.scheduler)(optimizer, num_warmup_steps=spec.warmup_steps,
                                          num_training_steps=spec.optim.steps)


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
            inspect.signature(func).bind(None, **dict.fromkeys(given[1:]), **kwargs)  # as built above
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{target} cannot take these arguments: {exc}", where=f"optim.{key}",
                              fix=f"keep only arguments {target} accepts (it is given {', '.join(given)})") from None
        out[key] = target
    return out
