"""Peer pruning libraries, adapted to accelvit's models for bench.pareto."""
