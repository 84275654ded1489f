"""The training job: entrypoint, Ultralytics adapter, Ray Train wrapper."""
