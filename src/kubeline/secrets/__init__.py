"""Encrypted secrets: Fernet keys and ciphertext (``crypto``) and the service over the store
(``service``). Values are never logged or put into exception messages."""
