"""The EMMA thesis protocol (Experiment II, chapter-4 experiments), its report, plots and run loader."""
