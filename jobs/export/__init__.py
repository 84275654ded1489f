"""The export job: ONNX and TensorRT conversion, accuracy gates, publishing, Pushgateway metrics.

``python -m jobs.export --spec URI`` runs it on its own; the training job calls
:func:`jobs.export.pipeline.export_and_publish` in-process after training.
"""
