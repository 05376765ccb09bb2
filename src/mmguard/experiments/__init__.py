"""Protocols, reports, plots and run loaders — everything that *uses* guards and methods.

* :mod:`~mmguard.experiments.harness` — ``mmguard bench``: any registered guards × data × faults × seeds
* :mod:`~mmguard.experiments.emma` — the thesis's Experiment II and chapter-4 experiments
* :mod:`~mmguard.experiments.mmssl` — the MMSSL paper protocol on the digital twin
* :mod:`~mmguard.experiments.runs` — ``mmguard eval``: reopen any run directory

Method packages (emma, mmssl, baselines) never import this package.
"""
