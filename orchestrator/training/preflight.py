"""Before torch loads: refuse what would fail later, then train one spec.

`check_before_torch` runs in the CLI's process before Hydra starts any job, so a bad manifest, an
output folder that cannot be written or a registry that cannot be opened fails in seconds.
`train_one` is what each Hydra job (one sweep point) runs.
"""
from __future__ import annotations

import logging
from pathlib import Path

from orchestrator.config.spec import RunSpec

log = logging.getLogger("orchestrator")


def check_before_torch(spec: RunSpec) -> None:
    """Refuse bad data, an output folder that cannot be written and a registry that cannot be
    opened in seconds, before torch loads. The manifests' audio is decoded here once; the run
    reuses the result (manifest.load_split keeps it while the files are unchanged). The registry
    is created/migrated here, once, before a sweep's jobs open it."""
    from orchestrator.artifacts.atomic import check_output_dir
    from orchestrator.data.manifest import load_splits
    from orchestrator.registry import Store

    load_splits(spec.manifests, spec.data)
    check_output_dir(spec.output_dir)
    Store(spec.registry.url).close()


def train_one(spec: RunSpec, sweep_id: str | None = None) -> str:
    """Train `spec` into its registry; returns the run id."""
    from orchestrator.registry import Store
    from orchestrator.training import loop as train

    store = Store(spec.registry.url)
    try:
        run_id = train.run(spec, store, sweep_id=sweep_id)
    finally:
        store.close()
    log.info("run %s finished: outputs in %s", run_id, Path(spec.output_dir) / run_id)
    return run_id
