"""Failure notifications (Prequel's notification webhooks), without Dagster: the events, the request each
vendor takes (``payloads``) and sending them, signed and retried (``sender``). The Dagster sensors that
find the events are ``prequel_dagster.notifications_sensors``."""
