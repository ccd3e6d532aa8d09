"""The baseline `bench/ingest.py` compares the engine's POST /api/events with.

A Flask app that parses the JSON body and answers 202, and nothing else: no token check, no
validation, no Redis. It runs under exactly the gunicorn command line `lifecycle serve` uses (the
benchmark copies it from the running server), so the difference between the two is what the
engine adds to a request.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/api/events")
def events():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify({"error": "bad_request"}), 400
    return jsonify({"accepted": 1, "duplicates": 0, "events": [body.get("id")]}), 202


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
