"""mmguard's own guard (issue #11): detect the failing modality, restore it from the healthy ones.

``torch_model`` holds the plain PyTorch modules, ``guard`` the registered guard (``restore``).
Design, decisions and measurements: docs/restore.md.
"""
