"""Exporting a fitted guard's whole inference path as one portable graph (``mmguard export``; docs/export.md).

* :mod:`~mmguard.export.onnx` — :func:`~mmguard.export.onnx.export_onnx`: raw modalities →
  standardisation → the guard's computation → ``scores`` / ``flags`` / ``fixed:<modality>`` /
  ``prediction``, one ONNX file with a dynamic batch size and mmguard metadata;
* :mod:`~mmguard.export.runtime` — :class:`~mmguard.export.runtime.OnnxGuard`: runs such a file with
  ONNX Runtime behind the guard's own ``score`` / ``flag`` / ``transform`` / ``predict`` API.

The graph is built by the guard (:meth:`mmguard.guard.Guard.export_module` around its
``_inference_module`` hook); this package only serialises and runs it. ``onnx``, ``onnxscript`` and
``onnxruntime`` come with the ``export`` extra and are imported only when used.
"""
