"""Packaging that pyproject.toml cannot say: the checkout's top-level conf/ ships inside the wheel
as the package data folder `orchestrator/conf/` (config/paths.py finds it there when installed).
Everything else about the project is in pyproject.toml."""
from setuptools import find_namespace_packages, setup

CONF = ["orchestrator.conf", *(f"orchestrator.conf.{p}" for p in find_namespace_packages(where="conf"))]

setup(packages=[*find_namespace_packages(include=["orchestrator*"], exclude=["*__pycache__*"]), *CONF], package_dir={"orchestrator.conf": "conf"})
