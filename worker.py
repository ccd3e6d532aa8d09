"""Thin RQ worker entry point (Procfile `worker:`); `lifecycle worker` does the same."""

from engine.config import from_env
from engine.worker import run_worker

if __name__ == "__main__":
    run_worker(from_env())
