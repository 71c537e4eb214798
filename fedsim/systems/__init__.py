"""Systems realism: hospitals that are slow, offline or late (README, Systems).

- `config`: the `systems` section (tiers, deadline, stragglers, over-selection).
- `profiles`: each hospital's system profile, drawn from the run seed (systems.parquet).
- `clock`: the simulated clock of a synchronous round: who arrives when, who is kept.
"""
