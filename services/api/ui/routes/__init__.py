"""The dashboard's pages: one module per resource, named like the API's (services/api/routes/)."""
