"""Access control: who may do what (``roles``), how they prove it (``passwords``, ``tokens``,
``sessions``, ``oidc``), and the record of what they did (``audit``).

``service.AuthService`` ties them to the store; ``kubeline.api.access`` applies them to every
route. Nothing here knows about HTTP except ``oidc`` (it talks to identity providers).
"""
