"""`orchestrator tune`: an acceptance-driven search campaign over a declared space, within a budget.

The flow, one module each:
  settings  the `tune` settings (conf/tune/*.yaml: `tune=NAME`, else the exp's own, else default; `tune.*`)
  space     the search space: validated against the experiment's composition, sampled by Optuna
  study     the Optuna study in the registry's own database; dead trials found and retried
  pruning   the guard-aware pruning rule, asked after every interval
  worker    one trial = one normal registry run (same identity, resume, verdicts)
  campaign  the command: validate, create the study once, launch K workers, the campaign verdict
  render    the EXPERIMENTS.md block (torch-free, Optuna-free: it reads the registry only)
"""
