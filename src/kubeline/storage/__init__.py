"""Persistence: the Store port (``base``) and its one implementation, the SQL adapter (``sql``)."""
