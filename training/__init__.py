"""Training: datasets rendered through the real plugin, encoders, losses through the proxy, and
evaluation by re-rendering predictions through the real plugin.

Entry point: ``python -m training.fit --config configs/amsynth.toml [--set section.key=value ...]``.
"""
