"""Where the project's declarative files live. Light on purpose: the report path reads it too."""
from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_CRITERIA = CONF_DIR / "criteria" / "default.yaml"


def declared_experiments(exp_dir: Path = CONF_DIR / "exp") -> list[str]:
    """The experiment names declared in `exp_dir` (conf/exp/*.yaml), without Hydra."""
    return sorted(p.stem for p in Path(exp_dir).glob("*.yaml"))
