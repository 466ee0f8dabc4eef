"""The fleet: devices, their data, the base model, the Ray workers that train clients, and the clock."""
