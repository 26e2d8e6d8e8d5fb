"""Where cutouts come from: the simulation, a folder a user brings, the Legacy Survey viewer."""
