"""Patient scheduling: an MLFQ hospital environment, its hospital network, heuristics and a DQN.

Kept import-light on purpose: the config schema loads `fedsim.scheduling.config` (through the
task's spec) without torch, gymnasium or RLlib.
"""
