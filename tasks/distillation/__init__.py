"""The distill stage's parts (tasks/distill.py composes them): examples, forward passes, teacher
targets, objectives, on-policy sampling, checkpoints, the training loop."""
