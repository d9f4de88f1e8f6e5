"""The core: environments, protocols, replay, accounting, run store, configs, seed streams,
learners and the method plug-in interface. It imports nothing from the layers above."""
