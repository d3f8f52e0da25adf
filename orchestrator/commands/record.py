"""`orchestrator record`: enter a run made outside the tool (marked external); prints its id."""
from __future__ import annotations

from orchestrator.commands import DEFAULT_REGISTRY


def register(sub) -> None:
    p = sub.add_parser("record", help="enter a run made outside the tool (marked external); prints its id")
    p.add_argument("--experiment", required=True)
    p.add_argument("--model", required=True, help="model id")
    p.add_argument("--steps", required=True, type=int)
    p.add_argument("--lr", required=True, type=float)
    p.add_argument("--targets", required=True, help="what was adapted, as text")
    p.add_argument("--dora", action="store_true")
    p.add_argument("--wer", action="append", default=[], metavar="STEP:DOMAIN:HELDOUT",
                   help="WERs in percent at a step (repeatable), e.g. 0:12.40:4.79; '-' for a missing one")
    p.add_argument("--status", help="annotation, e.g. flawed (default: the status is derived from the verdicts)")
    p.add_argument("--note", help="annotation note, shown in the report")
    p.add_argument("--run-id", help="default: <experiment>-<time>-<random>")
    p.add_argument("--registry", default=DEFAULT_REGISTRY, help="created if missing (default: %(default)s)")


def parse_wer_point(text: str) -> dict:
    """`STEP:DOMAIN:HELDOUT` with WERs in percent ('-' or empty: not reported) -> interval
    fields with WERs as fractions, e.g. "600:12.64:4.92" -> step 600, 0.1264, 0.0492."""
    from orchestrator.errors import ConfigError

    parts = text.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        step = int(parts[0])
        wers = [None if p.strip() in ("", "-") else float(p) / 100 for p in parts[1:]]
        if step < 0 or any(w is not None and not 0 <= w < 100 for w in wers):
            raise ValueError
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as STEP:DOMAIN:HELDOUT", where="--wer",
                          fix="a step >= 0 and WERs in percent, e.g. --wer 600:12.64:4.92") from None
    return {"step": step, "domain_wer": wers[0], "heldout_wer": wers[1]}


def run(args) -> None:
    from orchestrator.config.criteria import load_criteria
    from orchestrator.config.paths import DEFAULT_CRITERIA
    from orchestrator.registry import Store

    points = [parse_wer_point(text) for text in args.wer]
    criteria = load_criteria(DEFAULT_CRITERIA)
    store = Store(args.registry)
    try:
        run = store.record_external(
            experiment=args.experiment, model_id=args.model, steps=args.steps, lr=args.lr,
            target_summary=args.targets, dora=args.dora, intervals=points, annotation_status=args.status,
            annotation_note=args.note, criteria=criteria.as_dict(), run_id=args.run_id)
    finally:
        store.close()
    print(run.id)
