"""Where the project's declarative files live. Light on purpose: the report path reads it too."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
# conf/ as installed inside the package (a wheel), else the checkout's conf/ beside it
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"
DEFAULT_CRITERIA = CONF_DIR / "criteria" / "default.yaml"


def declared_experiments(exp_dir: Path = CONF_DIR / "exp", *, search_dirs: Iterable[Path] = ()) -> list[str]:
    """The experiment names declared in `exp_dir` (conf/exp/*.yaml) and in the exp/ folder of each
    config folder of the user's own on the search path (`--config-dir DIR`), without Hydra."""
    folders = [Path(exp_dir), *(Path(d) / "exp" for d in search_dirs)]
    return sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
