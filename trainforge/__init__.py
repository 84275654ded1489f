"""trainforge: batch fine-tuning of Ultralytics YOLO detectors on Ray and Kubernetes."""

__version__ = "0.1.0"
