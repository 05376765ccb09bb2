"""Model-agnostic analyses: local Lipschitz and Jacobian estimators, fault-energy spread, MMD, Fréchet, t-SNE."""
