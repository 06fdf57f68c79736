"""ilma sensors: readings, quality flags, device profiles, validation and occupancy estimation."""
