"""moonshine-orchestrator: declarative LoRA/DoRA campaigns for Moonshine ASR, with a run registry."""
__version__ = "0.1.0"
