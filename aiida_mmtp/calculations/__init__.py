"""CalcJobs of the plugin and the plain input writers they use."""
