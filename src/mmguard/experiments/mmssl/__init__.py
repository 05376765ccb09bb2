"""The MMSSL paper protocol on the digital twin, its diagnostics, report, plots and run loader."""
