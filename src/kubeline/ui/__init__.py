"""The web UI: a React single-page app built from ``ui/`` into ``static/`` and served here.

The built files live inside the package (``static/``, made by ``scripts/bootstrap`` or
``npm run build`` in ``ui/``, never committed), so a wheel install needs no Node. ``mount`` adds
them to an app: ``/assets/...`` are the hashed bundles (cached for a year), and any other GET
path that no API route answers gets ``index.html`` (the app routes in the browser). Paths under
``/api/`` and the probe paths are never shadowed: unknown ones still get the API's 404 problem.
"""
