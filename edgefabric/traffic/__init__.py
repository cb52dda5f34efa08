"""Engine-free global traffic: health probes and hysteresis, the weight planner, the DNS
backends and the reconcile loop the dynamic resource and the controller share."""
