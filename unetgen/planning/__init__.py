"""Spec → plan: every layer, size, cost and limit of the network worked out in pure integer arithmetic, before anything is built. Never imports torch."""
