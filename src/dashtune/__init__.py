"""dashtune: a self-hosted, DashScope-compatible fine-tuning service."""

__version__ = "0.1.0"
