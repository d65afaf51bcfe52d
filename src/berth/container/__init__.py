"""The container model, its state machine, persistence and the ViewDB."""
