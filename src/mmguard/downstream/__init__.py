"""Downstream models that guards protect (quality and process control), used by `mmguard bench --downstream`."""
