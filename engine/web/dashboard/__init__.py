"""The dashboard at `/`: the funnel as a chart, contact timelines, rules, sync health with dead
letters, recent deliveries; RQ's own dashboard at /rq. HTML for people; /api/* stays JSON + bearer.

`views` holds the blueprint and its pages, `access` the sign-in and CSRF checks (and /rq behind
them), `panels` what each page shows, read from the store.
"""

from engine.web.dashboard.views import bp

__all__ = ["bp"]
