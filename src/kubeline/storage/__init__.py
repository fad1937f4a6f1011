"""Persistence: the Store port (``base``), SQL adapter (``sql``) and in-memory fake (``memory``)."""
