"""`edgefabric simulate`: a past (or imagined) incident replayed on a virtual clock.

A scenario (`scenario.Scenario`, YAML) is a timeline of probe outcomes per cloud ("aws down
10:00-10:07, azure flaps every 20 s") plus the settings to judge it with: the stack's own
`healthCheck`, `strategies`, `routing`, `failover.action` and published names, or a
stack file's. `engine.run` feeds it through the controller's own hysteresis
(`HealthTracker`) and planner (`RecordPlanner`), so the weights over time are the ones the
controller would have published; `engine.compare` runs the same scenario under a proposed
change as well. `report` prints the weight table and draws the PNG.

Pure and engine-free apart from reading files and writing the picture: no probes, no DNS,
no sleeping.
"""
