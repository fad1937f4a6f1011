"""Git repositories as the source of pipelines: fetch, check out aside, validate, switch."""
