"""Experiments as `train.Task`s: what differs between them, handed to the one trainer."""
