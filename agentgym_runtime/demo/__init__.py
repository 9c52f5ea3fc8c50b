"""The demo: one user of the product (its loop, its GRPO glue and its small model).

Nothing in the product imports this package; ``agentgym demo`` does.
"""
