"""Hydra multirun support: failed jobs are recorded (not fatal to the sweep) and summarised at the end."""
