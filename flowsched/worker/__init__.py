"""The worker side of the Celery executor: task body, start-up, log server, inspection."""
