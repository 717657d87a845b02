"""Reload hooks: run an action when a revision is published or local files change, without storms.

``trigger.py`` holds what every action gets and may raise; ``rest.py``, ``process.py`` and
``webhook.py`` are the actions (none imports another); ``runner.py`` runs one hook (pace,
coalescing, backoff, refusals) and ``component.py`` turns bus events into triggers.
"""
