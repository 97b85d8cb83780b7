"""The scheduler: runs from schedules, tasks from dependencies, retries, zombies."""
