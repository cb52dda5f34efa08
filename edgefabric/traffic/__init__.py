"""Engine-free global traffic: the one typed `FailoverSpec` (`spec`), health probes and
hysteresis (`health`), the weight planner (`planner`), the DNS backends built by name
(`dns`) and the reconcile round (`reconcile`) the dynamic resource and the controller share."""
