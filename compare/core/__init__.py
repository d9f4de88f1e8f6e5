"""The core: environments, protocols, replay, accounting, run store, configs, seeds, learners and the method plug-in interface. Imports nothing above it."""
