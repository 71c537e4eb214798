"""Patient scheduling: an MLFQ hospital environment, its hospital network, heuristics and a DQN.

Kept import-light on purpose: `fedsim.config` imports `fedsim.scheduling.config`, and the server
actor imports the config without torch, gymnasium or RLlib.
"""
