"""The scheduler: schedule ticks, webhooks and their store-backed state (see ``ticker``)."""
