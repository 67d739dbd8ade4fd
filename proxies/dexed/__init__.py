"""Dexed / DX7 FM (PyPI ``dexed-py`` 0.3.0, the Dexed "Mark I" engine rendered in-process).

* :mod:`proxies.dexed.spec`: the 155-value DX7 voice (VCED order) as a ``SynthSpec``, and the
  sampling prior.
* :mod:`proxies.dexed.presets`: ``.syx`` banks and single voices, raw 4096-byte and hexter banks,
  VMEM <-> VCED, the hexter corpus.
* :mod:`proxies.dexed.engine`: the real engine (a thread pool of ``dexed.DexedSynth``).
* :mod:`proxies.dexed.synth`: the ``Synth`` record the registry knows it by.

Importing this package imports nothing heavy (no JAX, no dexed).
"""
