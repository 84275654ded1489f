"""The sweep job: Ray Tune over the training job's Ultralytics adapter."""
