"""Notifications of run events: produced into an outbox, delivered by channel with retries."""
