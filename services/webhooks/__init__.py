"""Webhook pieces the API and the dispatcher share.

- :mod:`services.webhooks.destinations`: where a webhook may point (https, the operator's
  allowed hosts, no private, link-local or cloud-metadata address unless allowed), checked when
  a subscription is created and again on the address each delivery actually connects to;
- :mod:`services.webhooks.transport`: one delivery attempt over that check (no redirects, one
  deadline for the whole exchange, a cap on what is read back);
- :mod:`services.webhooks.secrets`: signing secrets sealed under TRAINFORGE_SECRET_KEY.

What events exist and when they are recorded: services/store/outbox.py; how they are
delivered: services/dispatcher/webhook_relay.py.
"""
