"""A fast stand-in for the training entrypoint, used by the dispatcher and API tests."""
