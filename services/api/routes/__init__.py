"""HTTP routes: thin adapters from requests to the use cases in services/api/*.py."""
