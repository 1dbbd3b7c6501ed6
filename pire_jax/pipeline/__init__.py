"""Experiment pipelines: prepare queries, attack them, evaluate retrieval before and after, report."""
