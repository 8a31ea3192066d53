"""WorkChains of the plugin: restarted cDFT runs and batch labelling."""
