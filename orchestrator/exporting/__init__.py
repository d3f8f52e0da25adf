"""A run, out of the registry, into what other tools read: a merged or plain adapter folder
(merge), an MLflow tracking store (mlflow), TensorBoard event files (tensorboard), and per-run
curves beside EXPERIMENTS.md (curves). Only `merge` imports torch, and only when called."""
